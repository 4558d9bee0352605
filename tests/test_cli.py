"""The `asr` command: every subcommand has --help; user errors are one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asr.cli import COMMANDS


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "asr", "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    out = subprocess.run([sys.executable, "-m", "asr", name, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and f"asr {name}" in out.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_building_a_commands_options_does_not_import_torch(name):
    """`asr NAME --help` stays instant: torch (seconds to import) waits until the command runs."""
    code = (f"import argparse, importlib, sys; importlib.import_module({COMMANDS[name]!r})"
            ".add_arguments(argparse.ArgumentParser()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_user_error_is_one_line_with_nonzero_exit(tmp_path):
    out = subprocess.run([sys.executable, "-m", "asr", "train", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"asr train: error: {tmp_path / 'missing.yaml'}: no such config file"]
