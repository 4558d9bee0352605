"""The bad-input suite's runner: one `asr` command line per case, checked for its exit status, one
clear error line (or a named warning) and no traceback. Case tables live in test_bad_inputs_*.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr.cli import main


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (built inside a fresh folder), the exit status and the words expected.

    `message` is a regular expression searched in the error line when `code` is non-zero, else in
    stderr and the log records (a warning the command must give while it goes on).
    """

    name: str
    argv: Callable[[Path], list[str]]
    message: str
    code: int = 1

    def __str__(self) -> str:  # pytest's id
        return self.name


def run_case(case: Case, folder: Path, capsys, caplog) -> str:
    """Run the case's command in-process; return its stdout after checking status and words."""
    argv = [str(a) for a in case.argv(folder)]
    with caplog.at_level("WARNING"):
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse's usage errors (status 2)
            code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert code == case.code, f"exit {code}, expected {case.code}; stderr:\n{err}"
    if case.code != 0:
        errors = [line for line in err.splitlines() if line.startswith(f"asr {argv[0]}: error: ")]
        assert len(errors) == 1, f"expected one error line, got:\n{err}"
        assert re.search(case.message, errors[0]), f"{case.message!r} not in {errors[0]!r}"
    else:
        assert re.search(case.message, err + caplog.text), f"{case.message!r} not in the warnings:\n{err}{caplog.text}"
    return out
