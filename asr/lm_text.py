"""Text for the character language model (`asr lm-text`): normalised English from Debian packages.

The sources are those of `asr.synth.text` (their readers, titles, licences and
packages are reused as they are), the larger parts of the same packages that a
language model can use but a TTS prompt cannot (every WordNet definition, the
GCIDE's definitions and quotations), and the fortune cookie files:

    source readers (fixed order) --raw sentences--> clean_sentence (1 word or more)
        --> cut into pieces of at most `max_words` words
        --> drop lines of the --exclude manifests and lines already written
        --> one line each, in first-seen order

so the same installed packages give the same bytes on every run. A source whose
files are not installed is skipped with its reason. The text is written to a
file given by the caller and never shipped with the toolkit.

    >>> split_words("a b c d e", max_words=2)
    ['a b', 'c d', 'e']
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import re
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from asr.errors import AsrError
from asr.synth.text import SOURCES, TextSource, clean_sentence, split_sentences, wordnet_glosses
from asr.text import TextNormalizer

MAX_WORDS = 60  # longer sentences are cut into pieces of at most this many words
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_SKIPPED = ("ascii-art", "translate-me")  # pictures; Latin and other languages

_UNBOUNDED = sys.maxsize


class LMTextError(AsrError):
    """A source, manifest or output file of `asr lm-text` that cannot be used."""


# --- WordNet 3.0 definitions ----------------------------------------------------------------

_QUOTED = re.compile(r'"[^"]*"')


def read_wordnet_definitions(folder: Path) -> Iterator[str]:
    """The definitions of every gloss of data.noun/verb/adj/adv (examples left out), one per ';' part."""
    for gloss in wordnet_glosses(folder):
        for definition in _QUOTED.sub(" ", gloss).split(";"):
            if definition.strip():
                yield definition.strip()


# --- GCIDE (Webster 1913 and later): definitions, notes and quotations --------------------------

_GLUED_CODE = re.compile(r"(?<=[A-Za-z])\[[^\[\]\s]{1,5}\]|\[[^\[\]\s]{1,5}\](?=[A-Za-z])")  # accents: M[ae]andrina
_BRACKETS = re.compile(r"\[[^\[\]]*\]")  # etymologies, [Obs.], [1913 Webster]
# What is left of an entry's first line: pronunciation, part of speech, plural: "(d|z), v. t.; pl. {Xs}."
_PRONUNCIATION = re.compile(r"^\s*(?:\([^()]*\))?(?:[\s,;]*(?:[a-z]+\.|&|or|\{[^{}]*\}))*[\s,;.]*")
_SENSE = re.compile(r"(?m)^\s*\d+\.\s+|\([a-z]\)\s|\((?:[A-Z][a-z]*\.?\s*)+\)")  # 2.  (b)  (Zool.)
_ATTRIBUTION = re.compile(r"--\s?[A-Z][\w.']*(?:\s+[A-Z][\w.']*)*")  # --Sir W. Scott.
_CROSS_REF = re.compile(r"\{([^{}]*)\}")
_LABEL = re.compile(r"^\s*(?:Note|Usage):\s*")


def read_gcide_text(path: Path) -> Iterator[str]:
    """Sentences of the GCIDE's definitions, usage notes and quotations, markup and citations removed.

    Paragraphs (blank-line separated) are read one by one; an entry's first line loses its headword,
    pronunciation and part of speech, synonym lists are left out, and words with accent codes keep a
    mark that makes `clean_sentence` reject their sentence rather than misspell it.
    """
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    started = False  # the database header (licence, credits) comes before the first entry
    for paragraph in re.split(r"\n\s*\n", text):
        entry = paragraph[:1].isalpha() and "\\" in paragraph.split("\n", 1)[0]
        started = started or entry
        if not started:
            continue
        if entry:  # "Daze \Daze\ (d[=a]z), v. t. [etymology]" -> what follows the last backslash
            first, _, rest = paragraph.partition("\n")
            paragraph = first[first.rindex("\\") + 1 :] + "\n" + rest
        paragraph = _GLUED_CODE.sub("|", paragraph)
        for _ in range(3):  # nested brackets, innermost first
            paragraph = _BRACKETS.sub(" ", paragraph)
        if entry:
            paragraph = _PRONUNCIATION.sub("", paragraph, count=1)
        paragraph = paragraph.split("Syn:", 1)[0]
        paragraph = _CROSS_REF.sub(r"\1", _ATTRIBUTION.sub(" ", _SENSE.sub(" ", _LABEL.sub("", paragraph))))
        yield from split_sentences(paragraph)


# --- fortune cookie files -----------------------------------------------------------------------

_FORTUNE_SEPARATOR = re.compile(r"(?m)^%[ \t]*$")
_FORTUNE_ATTRIBUTION = re.compile(r"(?m)^\s*--")


def read_fortunes(folder: Path) -> Iterator[str]:
    """Sentences of the fortune files ('%'-separated), in file name order; attributions left out."""
    for path in sorted(folder.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file() or path.name in FORTUNES_SKIPPED:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for fortune in _FORTUNE_SEPARATOR.split(text):
            fortune = _FORTUNE_ATTRIBUTION.split(fortune, 1)[0]  # "-- Mark Twain" and what follows it
            yield from split_sentences(_BRACKETS.sub(" ", fortune))


def _derived(base: str, name: str, title: str, read) -> TextSource:
    """Another reading of the files of synth source `base` (same package, path and licence)."""
    return dataclasses.replace(SOURCES[base], name=name, title=title, read=read)


# The language model's sources in the order they are read: a sentence is credited to the first.
LM_SOURCES: tuple[TextSource, ...] = (
    SOURCES["web"],
    SOURCES["wordnet"],
    SOURCES["gcide"],
    SOURCES["devil"],
    _derived("wordnet", "wordnet-definitions", "WordNet 3.0 gloss definitions", read_wordnet_definitions),
    _derived("gcide", "gcide-text", "GCIDE definitions, usage notes and quotations", read_gcide_text),
    TextSource("fortunes", "fortune cookie files (fortune-mod)",
               "BSD licence of fortune-mod (Debian copyright file); quotations belong to their authors",
               "fortunes-min or fortunes", FORTUNES_DIR, read_fortunes),
)


def source_names() -> list[str]:
    """Names of the language model's sources, in reading order."""
    return [s.name for s in LM_SOURCES]


def select_sources(names: Iterable[str] | None = None, paths: dict[str, str | Path] | None = None) -> list[TextSource]:
    """The named sources (all when None) in reading order, with their file or folder replaced by `paths`."""
    known = {s.name: s for s in LM_SOURCES}
    wanted = list(known) if names is None else list(names)
    for name in [*wanted, *(paths or {})]:
        if name not in known:
            raise LMTextError(f"unknown text source {name!r} (known: {', '.join(known)})")
    chosen = [known[name] for name in known if name in wanted]
    return [dataclasses.replace(s, path=Path(paths[s.name])) if paths and s.name in paths else s for s in chosen]


# --- from raw sentences to lines ----------------------------------------------------------------


def split_words(sentence: str, max_words: int) -> list[str]:
    """The sentence cut into the fewest pieces of at most `max_words` words, of near-equal lengths."""
    words = sentence.split()
    pieces = math.ceil(len(words) / max_words)
    size = math.ceil(len(words) / pieces) if pieces else 0
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)] if words else []


def read_excluded(manifests: Sequence[str | Path]) -> set[str]:
    """Normalised forms of every "text" field of the JSON Lines manifests (recognizer and LM normalisation)."""
    normalize = TextNormalizer().normalize
    excluded: set[str] = set()
    for path in map(Path, manifests):
        try:
            with open(path, encoding="utf-8") as f:
                for no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                        excluded.add(normalize(text))
                    except (ValueError, KeyError, TypeError, AttributeError):
                        raise LMTextError(f"{path}:{no}: not a manifest line with a 'text' field") from None
                    clean = clean_sentence(text, 1, _UNBOUNDED)
                    if clean is not None:
                        excluded.add(clean)
        except (OSError, UnicodeDecodeError) as err:
            raise LMTextError(f"{path}: cannot read manifest: {err}") from None
    excluded.discard("")
    return excluded


def _source_lines(source: TextSource, max_words: int, stats: dict) -> Iterator[str]:
    """Clean lines of one source (pieces of long sentences), counting what was read and rejected."""
    for raw in source.read(source.path):
        stats["read"] += 1
        clean = clean_sentence(raw, 1, _UNBOUNDED)
        if clean is None:
            stats["rejected"] += 1
            continue
        yield from split_words(clean, max_words)


def build_lm_text(
    out: str | Path,
    sources: Sequence[TextSource] | None = None,
    exclude: Sequence[str | Path] = (),
    max_words: int = MAX_WORDS,
    warn=None,
) -> dict:
    """Write the language-model text of `sources` (default: every one) to `out`; returns a summary.

    A source whose path is missing is skipped, its reason given to `warn(name, reason)` and listed in
    the summary's "skipped". The summary holds per source its title, licence, package, path and the
    counts "read", "rejected", "duplicates", "excluded", "lines" and "bytes" written; then totals
    "lines", "bytes", "excluded" and the file's "sha256".
    """
    if max_words < 1:
        raise LMTextError(f"max_words must be at least 1, got {max_words}")
    sources = list(LM_SOURCES if sources is None else sources)
    excluded = read_excluded(exclude)
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    summary: dict = {"out": str(out), "sources": {}, "skipped": {}}
    seen: set[str] = set()
    digest = hashlib.sha256()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            for source in sources:
                if not source.available():
                    reason = f"{source.path} not found (Debian package {source.package})"
                    summary["skipped"][source.name] = reason
                    if warn is not None:
                        warn(source.name, reason)
                    continue
                stats = dict(title=source.title, licence=source.licence, package=source.package,
                             path=str(source.path), read=0, rejected=0, duplicates=0, excluded=0, lines=0, bytes=0)
                try:
                    for line in _source_lines(source, max_words, stats):
                        if line in seen:
                            stats["duplicates"] += 1
                        elif line in excluded:
                            stats["excluded"] += 1
                        else:
                            seen.add(line)
                            data = line + "\n"
                            f.write(data)
                            digest.update(data.encode("ascii"))
                            stats["lines"] += 1
                            stats["bytes"] += len(data)
                except (OSError, EOFError, ValueError, zlib.error, struct.error) as err:
                    raise LMTextError(f"text source {source.name!r}: cannot read {source.path}: {err}") from None
                summary["sources"][source.name] = stats
        if not summary["sources"]:
            raise LMTextError("no text source installed: install "
                              + ", ".join(dict.fromkeys(s.package for s in sources)) + " (Debian packages)")
        if not seen:
            raise LMTextError("the sources gave no usable line")
        os.replace(tmp, out)
    except OSError as err:
        raise LMTextError(f"{out}: cannot write: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    per_source = summary["sources"].values()
    summary.update(lines=sum(s["lines"] for s in per_source), bytes=sum(s["bytes"] for s in per_source),
                   excluded=sum(s["excluded"] for s in per_source), sha256=digest.hexdigest())
    return summary


def format_summary(summary: dict) -> str:
    """The summary as a small table: one row per source, then the total."""
    rows = [f"{'source':<20} {'lines':>9} {'bytes':>11}  licence"]
    for name, s in summary["sources"].items():
        rows.append(f"{name:<20} {s['lines']:>9,} {s['bytes']:>11,}  {s['licence']}")
    for name, reason in summary["skipped"].items():
        rows.append(f"{name:<20} {'-':>9} {'-':>11}  skipped: {reason}")
    rows.append(f"{'total':<20} {summary['lines']:>9,} {summary['bytes']:>11,}  -> {summary['out']}"
                + (f" ({summary['excluded']:,} excluded lines)" if summary["excluded"] else ""))
    return "\n".join(rows)
