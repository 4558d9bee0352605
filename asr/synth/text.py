"""Sentences to be read aloud: public-domain/permissive English text from offline sources.

Each source reads text that a Debian package installs, splits it into sentences and
cleans them to the toolkit's character set (lowercase a-z, apostrophe, space).
Sentences with digits or markup are dropped rather than guessed at, so every kept
sentence is read by a TTS voice exactly as its transcript says.

    >>> clean_sentence("“Don't go—stay here,” said the old man.")
    "don't go stay here said the old man"
    >>> clean_sentence("He paid 10 shillings for it.") is None
    True
"""

from __future__ import annotations

import gzip
import random
import re
import struct
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from asr.errors import AsrError

MIN_WORDS = 5
MAX_WORDS = 20

WEB_DIR = Path("/usr/share/sword/modules/texts/ztext/engWEB2015eb")
WORDNET_DIR = Path("/usr/share/wordnet")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
DEVIL_DICT = Path("/usr/share/dictd/devil.dict.dz")

_REJECT = re.compile(r"[0-9\[\]{}<>|\\/_*#@&%$=+~^`]|\. \. \.|\.\.\.")  # digits, markup, ellipses
_DASHES = re.compile(r"[-\u2010-\u2015]+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'"})
_DROP = re.compile(r"[.,;:!?\"()\u201c\u201d\u00ab\u00bb]")
_ALLOWED = re.compile(r"[a-z' ]+")
_STRAY_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")  # quotes, not apostrophes inside words
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019]))\s+(?=[\"'\u201c\u2018]*[A-Z])")


class TextSourceError(AsrError):
    """A text source is missing or unreadable."""


@dataclass(frozen=True)
class TextSource:
    """One offline source of sentences and the licence its text is under."""

    name: str  # short key used on the command line and in the provenance file
    title: str  # what the text is
    licence: str  # the licence of the text
    package: str  # Debian package that installs it
    path: Path  # file or folder read
    read: Callable[[Path], Iterator[str]]  # raw sentences (before cleaning), in a fixed order

    def available(self) -> bool:
        """True when the source's files are installed."""
        return self.path.exists()


def clean_sentence(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """The sentence in the toolkit's character set, or None when it has digits/markup or a bad length."""
    if _REJECT.search(text):
        return None
    text = unicodedata.normalize("NFKD", text.translate(_QUOTES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _DROP.sub(" ", _DASHES.sub(" ", text))
    text = _STRAY_APOSTROPHE.sub(" ", text)
    words = text.split()
    if not min_words <= len(words) <= max_words:
        return None
    text = " ".join(words)
    return text if _ALLOWED.fullmatch(text) else None


def split_sentences(text: str) -> list[str]:
    """Split running prose at sentence ends (., !, ? before a capital)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


# --- World English Bible (SWORD zText module) ---------------------------------------------

_NOTE = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
_WORD_TAG = re.compile(r"</?w\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def read_web(folder: Path) -> Iterator[str]:
    """Sentences of the World English Bible: every zlib block of the OT and NT, markup removed."""
    for testament in ("ot", "nt"):
        index = (folder / f"{testament}.bzs").read_bytes()  # 12-byte entries: offset, size, raw size
        blocks = (folder / f"{testament}.bzz").read_bytes()
        for k in range(len(index) // 12):
            offset, size, _ = struct.unpack_from("<III", index, 12 * k)
            if size == 0:
                continue
            xml = zlib.decompress(blocks[offset : offset + size]).decode("utf-8", "replace")
            prose = _TAG.sub(" ", _WORD_TAG.sub("", _NOTE.sub(" ", xml)))
            yield from split_sentences(prose)


# --- WordNet 3.0 gloss examples -------------------------------------------------------------

_EXAMPLE = re.compile(r'"([^"]+)"')


def wordnet_glosses(folder: Path) -> Iterator[str]:
    """The gloss (text after '|') of every synset line of data.noun/verb/adj/adv."""
    for part in ("noun", "verb", "adj", "adv"):
        with open(folder / f"data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or "|" not in line:  # licence header lines start with spaces
                    continue
                yield line.split("|", 1)[1]


def read_wordnet(folder: Path) -> Iterator[str]:
    """Quoted example sentences from the glosses of data.noun/verb/adj/adv."""
    for gloss in wordnet_glosses(folder):
        yield from _EXAMPLE.findall(gloss)


# --- dictd dictionaries (dictzip = gzip) ------------------------------------------------------

_QUOTATION = re.compile(r'"([^"]{10,400})"\s*--\s*[A-Z]')
_HEADWORD = re.compile(r"^[A-Z][A-Z' -]*,\s*(?:[a-z]+\.\s*)+")


def read_gcide(path: Path) -> Iterator[str]:
    """Attributed quotations of the GCIDE (Webster 1913): text in quotes followed by --Author."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for match in _QUOTATION.finditer(text):
        yield from split_sentences(match.group(1))


def read_devil(path: Path) -> Iterator[str]:
    """Sentences of The Devil's Dictionary's prose definitions (verse and citations skipped)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [ln for ln in paragraph.splitlines() if ln and not ln.startswith(" ")]  # indented = verse
        if lines:
            yield from split_sentences(_HEADWORD.sub("", " ".join(lines)))


SOURCES: dict[str, TextSource] = {
    s.name: s
    for s in (
        TextSource("web", "World English Bible (2015, with Deuterocanon)", "public domain", "sword-text-web",
                   WEB_DIR, read_web),
        TextSource("wordnet", "WordNet 3.0 gloss examples", "WordNet 3.0 licence (permissive, BSD-like)",
                   "wordnet-base", WORDNET_DIR, read_wordnet),
        TextSource("gcide", "GNU Collaborative International Dictionary of English quotations",
                   "GNU General Public License v3 or later", "dict-gcide", GCIDE_DICT, read_gcide),
        TextSource("devil", "The Devil's Dictionary (Ambrose Bierce, 1911)", "public domain", "dict-devil",
                   DEVIL_DICT, read_devil),
    )
}


def available_sources() -> list[str]:
    """Names of the sources whose files are installed."""
    return [name for name, source in SOURCES.items() if source.available()]


def source_sentences(name: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """The clean, de-duplicated sentences of one source, in the source's order."""
    if name not in SOURCES:
        raise TextSourceError(f"unknown text source {name!r} (known: {', '.join(SOURCES)})")
    source = SOURCES[name]
    if not source.available():
        raise TextSourceError(f"text source {name!r}: {source.path} not found (install Debian package {source.package})")
    return list(dict.fromkeys(_cleaned(source.read(source.path), min_words, max_words)))


def _cleaned(raw: Iterable[str], min_words: int, max_words: int) -> Iterator[str]:
    for sentence in raw:
        clean = clean_sentence(sentence, min_words, max_words)
        if clean is not None:
            yield clean


def collect_sentences(
    sources: Iterable[str] | None = None, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS
) -> dict[str, list[str]]:
    """Sentences per source, de-duplicated across sources (a sentence goes to the first source listing it)."""
    names = list(sources) if sources is not None else available_sources()
    if not names:
        raise TextSourceError("no text source installed: install sword-text-web, wordnet-base, dict-gcide or dict-devil")
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for name in names:
        out[name] = [s for s in source_sentences(name, min_words, max_words) if not (s in seen or seen.add(s))]
    return out


def sample_sentences(per_source: dict[str, list[str]], n: int, seed: int) -> list[tuple[str, str]]:
    """`n` distinct (source, sentence) pairs drawn at random with `seed`, sources mixed evenly by size."""
    pool = [(name, s) for name, sentences in per_source.items() for s in sentences]
    if n > len(pool):
        raise TextSourceError(f"asked for {n} sentences but the sources hold only {len(pool)}")
    return random.Random(seed).sample(pool, n)
