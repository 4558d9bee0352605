"""`asr lm-text`: deterministic, normalised, de-duplicated LM text from (fake or installed) Debian sources."""

from __future__ import annotations

import doctest
import gzip
import json
import re

import pytest

import asr.lm_text
from asr.cli import main
from asr.lm_text import LM_SOURCES, LMTextError, build_lm_text, read_gcide_text, select_sources
from asr.synth.text import SOURCES

LINE = re.compile(r"[a-z']+(?: [a-z']+)*")
LONG = " ".join(f"w{chr(97 + i % 26)}" for i in range(70))  # 70 words: cut into two pieces of 35

DEVIL = """\
ABSURDITY, n.  A statement or belief manifestly inconsistent with one's own
opinion.

BORE, n.  A person who talks when you wish him to listen.  Don't PANIC!
"""

FORTUNES = f"""\
Don't panic!
		-- Douglas Adams
%
He paid 10 shillings.  Hello.
%
{LONG}.
%
A person who talks when you wish him to listen.
"""

GCIDE = """\

00-database-info
   This file is part of the GNU version of the dictionary; see the GNU General Public License.

Daze \\Daze\\ (d[=a]z), v. t. [imp. & p. p. {Dazed}; p. pr. & vb.
   n. {Dazing}.] [OE. dasen.]
   To stupefy with excess of light; with a blow, or with fear.
   [1913 Webster]

         While flashing beams do daze his feeble eyen.
                                                  --Spenser.
   [1913 Webster]

   Syn: stun, stupefy.
        [1913 Webster]

Coral \\Cor"al\\, n.; pl. {Corals}.
   1. (Zool.) The hard skeleton of a M[ae]andrina polyp.
      [1913 Webster]

   2. A piece of coral, used by children as a plaything.
      [1913 Webster]
"""


def wordnet_line(gloss: str) -> str:
    return f"00001740 03 n 01 entity 0 000 | {gloss}  \n"


@pytest.fixture
def fake_sources(tmp_path):
    """A tiny tree standing in for the Debian packages: {source name: path}."""
    root = tmp_path / "sources"
    (root / "wordnet").mkdir(parents=True)
    (root / "wordnet" / "data.noun").write_text(
        "  1 This software and database is provided as is\n"
        + wordnet_line('a person who talks too much; "the bore talked for an hour"; "Hello"')
        + wordnet_line('something said; "don\'t panic"'), encoding="utf-8")
    for part in ("verb", "adj", "adv"):
        (root / "wordnet" / f"data.{part}").write_text("", encoding="utf-8")
    with gzip.open(root / "devil.dict.dz", "wt", encoding="utf-8") as f:
        f.write(DEVIL)
    with gzip.open(root / "gcide.dict.dz", "wt", encoding="utf-8") as f:
        f.write(GCIDE)
    fortunes = root / "fortunes"
    fortunes.mkdir()
    (fortunes / "cookie").write_text(FORTUNES, encoding="utf-8")
    (fortunes / "cookie.dat").write_bytes(b"\x00\x02binary index")
    (fortunes / "cookie.u8").symlink_to("cookie")
    (fortunes / "translate-me").write_text("Ego sum ens omnipotens.\n%\n", encoding="utf-8")
    return {"wordnet": root / "wordnet", "wordnet-definitions": root / "wordnet", "devil": root / "devil.dict.dz",
            "gcide-text": root / "gcide.dict.dz", "fortunes": fortunes}


def fake(paths: dict, names: list[str] | None = None):
    return select_sources(names or list(paths), paths)


def test_build_is_deterministic_normalised_and_deduplicated(fake_sources, tmp_path) -> None:
    sources = fake(fake_sources)
    first = build_lm_text(tmp_path / "a" / "lm.txt", sources)
    second = build_lm_text(tmp_path / "b" / "lm.txt", sources)
    data = (tmp_path / "a" / "lm.txt").read_bytes()
    assert data == (tmp_path / "b" / "lm.txt").read_bytes() and first["sha256"] == second["sha256"]
    lines = data.decode("ascii").splitlines()
    assert all(LINE.fullmatch(line) for line in lines)
    assert len(lines) == len(set(lines)) == first["lines"] and len(data) == first["bytes"]
    # One sentence per line, in source order: wordnet examples first (the fixed order), then the devil.
    assert lines[:4] == ["the bore talked for an hour", "hello", "don't panic",
                         "a statement or belief manifestly inconsistent with one's own opinion"]
    assert "a person who talks when you wish him to listen" in lines  # devil's, not again from the fortunes
    assert first["sources"]["fortunes"]["duplicates"] >= 2  # "don't panic" and the bore
    assert "douglas adams" not in data.decode() and "ego sum" not in data.decode()  # attribution, skipped file
    assert not any("shillings" in line for line in lines)  # digits: rejected, not guessed at
    pieces = [line for line in lines if re.fullmatch(r"w[a-z](?: w[a-z])*", line)]
    assert [len(p.split()) for p in pieces] == [35, 35] and " ".join(pieces) == LONG.replace(".", "")
    assert first["sources"]["wordnet"]["licence"] == SOURCES["wordnet"].licence


def test_sources_keep_a_fixed_order_and_reuse_the_synth_ones(fake_sources) -> None:
    assert LM_SOURCES[:4] == tuple(SOURCES.values())  # `asr synth` keeps its own four sources
    assert [s.name for s in fake(fake_sources, ["fortunes", "devil"])] == ["devil", "fortunes"]
    with pytest.raises(LMTextError, match="unknown text source 'nope'"):
        select_sources(["nope"])


def test_gcide_reader_keeps_definitions_and_quotations_without_markup(fake_sources) -> None:
    text = list(read_gcide_text(fake_sources["gcide-text"]))
    assert "To stupefy with excess of light; with a blow, or with fear." in text
    assert "While flashing beams do daze his feeble eyen." in text
    assert "A piece of coral, used by children as a plaything." in text
    joined = " ".join(text)
    assert "Spenser" not in joined and "Webster" not in joined and "stun" not in joined and "GNU" not in joined
    assert "Dazed" not in joined and "Corals" not in joined  # headword, inflections and etymology
    assert all("|" in s for s in text if "andrina" in s)  # accent code: kept marked, so clean_sentence drops it


def test_manifest_texts_are_excluded(fake_sources, tmp_path) -> None:
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text(json.dumps({"id": "u1", "text": "Don't PANIC!"}) + "\n\n"
                        + json.dumps({"id": "u2", "text": "Hello"}) + "\n", encoding="utf-8")
    summary = build_lm_text(tmp_path / "lm.txt", fake(fake_sources), exclude=[manifest])
    lines = (tmp_path / "lm.txt").read_text().splitlines()
    assert "don't panic" not in lines and "hello" not in lines and "the bore talked for an hour" in lines
    assert summary["excluded"] >= 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "u1"}\n', encoding="utf-8")
    with pytest.raises(LMTextError, match="bad.jsonl:1: not a manifest line"):
        build_lm_text(tmp_path / "lm2.txt", fake(fake_sources), exclude=[bad])


def test_command_skips_a_missing_source_with_its_reason(fake_sources, tmp_path, capsys) -> None:
    out = tmp_path / "lm.txt"
    code = main(["lm-text", "--out", str(out), "--sources", "devil,fortunes", "--path", "devil=/nonexistent/devil.dz",
                 "--path", f"fortunes={fake_sources['fortunes']}", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.strip() == "skipping devil: /nonexistent/devil.dz not found (Debian package dict-devil)"
    summary = json.loads(captured.out)
    assert list(summary["sources"]) == ["fortunes"] and "devil" in summary["skipped"]
    assert summary["bytes"] == out.stat().st_size > 0
    assert main(["lm-text", "--out", str(out), "--path", f"fortunes={fake_sources['fortunes']}",
                 "--sources", "fortunes"]) == 0
    assert "fortunes" in capsys.readouterr().out
    code = main(["lm-text", "--out", str(tmp_path / "none.txt"), "--sources", "devil",
                 "--path", "devil=/nonexistent/devil.dz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("asr lm-text: error: no text source installed")
    assert not (tmp_path / "none.txt").exists()


def test_docstring_examples() -> None:
    assert doctest.testmod(asr.lm_text).failed == 0


def test_builds_from_an_installed_debian_source(tmp_path) -> None:
    source = SOURCES["devil"]  # the smallest installed package: reads in well under a second
    if not source.available():
        pytest.skip(f"Debian package {source.package} not installed ({source.path} not found)")
    summary = build_lm_text(tmp_path / "lm.txt", select_sources(["devil"]))
    lines = (tmp_path / "lm.txt").read_text(encoding="ascii").splitlines()
    assert summary["sources"]["devil"]["lines"] == len(lines) > 1000
    assert summary["sources"]["devil"]["licence"] == "public domain"
    assert all(LINE.fullmatch(line) for line in lines) and len(set(lines)) == len(lines)
