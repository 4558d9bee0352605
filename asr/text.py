"""Text normalisation and the character tokenizer.

Ids 0..3 are reserved and fixed, characters follow in code point order, so a
vocabulary built twice from the same texts is identical:

    0 <blank>  padding of target batches and the CTC blank
    1 [GO]     first input of the speller
    2 [EOS]    end of an utterance, the speller's last output
    3 [UNK]    characters outside the vocabulary (only with oov="unk")
    4 ...      characters

The vocabulary file is UTF-8 text, one symbol per line in id order; the space
is written `<space>` and characters that do not print (tabs...) as `<U+0009>`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from asr.errors import AsrError

BLANK = "<blank>"
GO = "[GO]"
EOS = "[EOS]"
UNK = "[UNK]"
RESERVED = (BLANK, GO, EOS, UNK)
SPACE_SYMBOL = "<space>"
UNK_CHAR = "\ufffd"  # what decode() writes for [UNK]: the Unicode replacement character
APOSTROPHES = "'\u2019\u02bc"  # ASCII, right single quotation mark, modifier letter apostrophe
_ESCAPED = re.compile(r"<U\+([0-9A-F]{4,6})>")


class OOVError(AsrError):
    """A text holds characters that are not in the vocabulary."""

    def __init__(self, utt_id: str | None, chars: Sequence[str]):
        self.utt_id = utt_id
        self.chars = sorted(set(chars))
        where = f"utterance {utt_id!r}" if utt_id is not None else "text"
        shown = ", ".join(repr(c) for c in self.chars)
        super().__init__(f"{where}: characters not in the vocabulary: {shown}")


class VocabError(AsrError):
    """A vocabulary file or symbol list is malformed."""


@dataclass(frozen=True)
class NormalizerConfig:
    """How text is normalised before it is tokenised or scored."""

    unicode_form: str | None = "NFKC"  # unicodedata form applied first (None: leave as is)
    lowercase: bool = True  # str.lower() after the unicode form
    strip_punctuation: bool = True  # punctuation (Unicode category P*) becomes a space; apostrophes inside words stay
    collapse_spaces: bool = True  # any run of whitespace becomes one space; no space at the ends


class TextNormalizer:
    """Turns raw transcripts into the canonical form the tokenizer sees.

    >>> TextNormalizer().normalize("  Don't  STOP, 'Rock'n'roll'! ")
    "don't stop rock'n'roll"
    """

    def __init__(self, config: NormalizerConfig | None = None):
        self.config = config or NormalizerConfig()

    def normalize(self, text: str) -> str:
        """Normalised text; applying it twice gives the same result."""
        cfg = self.config
        if cfg.unicode_form:
            text = unicodedata.normalize(cfg.unicode_form, text)
        if cfg.lowercase:
            text = text.lower()
            if cfg.unicode_form:  # lowercasing can leave a string that is no longer in normal form
                text = unicodedata.normalize(cfg.unicode_form, text)
        if cfg.strip_punctuation:
            text = _strip_punctuation(text)
        if cfg.collapse_spaces:
            text = " ".join(text.split())
        return text

    __call__ = normalize


def _is_word_char(ch: str) -> bool:
    return ch not in APOSTROPHES and ch.isalnum() or unicodedata.category(ch).startswith("M")


def _strip_punctuation(text: str) -> str:
    """Punctuation -> space, except apostrophes between two word characters (-> ASCII ')."""
    out = []
    for i, ch in enumerate(text):
        if ch in APOSTROPHES:
            inside = 0 < i < len(text) - 1 and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1])
            out.append("'" if inside else " ")
        elif unicodedata.category(ch).startswith("P"):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _symbol_to_line(symbol: str) -> str:
    if symbol == " ":
        return SPACE_SYMBOL
    if len(symbol) == 1 and not symbol.isprintable():
        return f"<U+{ord(symbol):04X}>"
    return symbol


def _line_to_symbol(line: str) -> str:
    if line == SPACE_SYMBOL:
        return " "
    match = _ESCAPED.fullmatch(line)
    return chr(int(match.group(1), 16)) if match else line


class CharTokenizer:
    """Maps normalised text to character ids and back; see the module docstring for the ids.

    >>> tok = CharTokenizer.from_texts(["Hello world"])
    >>> tok.decode(tok.encode("hello, WORLD!"))
    'hello world'
    """

    blank_id = 0
    pad_id = 0  # targets are padded with the blank
    go_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(
        self,
        symbols: Sequence[str],
        oov: Literal["error", "unk"] = "error",
        normalizer: NormalizerConfig | None = None,
    ):
        symbols = list(symbols)
        if tuple(symbols[: len(RESERVED)]) != RESERVED:
            raise VocabError(f"vocabulary must start with {', '.join(RESERVED)}; got {symbols[:len(RESERVED)]}")
        chars = symbols[len(RESERVED) :]
        bad = [s for s in chars if len(s) != 1]
        if bad:
            raise VocabError(f"vocabulary entries after the reserved ones must be single characters; got {bad[:5]}")
        if len(set(chars)) != len(chars):
            raise VocabError("vocabulary lists a character twice")
        if oov not in ("error", "unk"):
            raise ValueError(f"oov must be 'error' or 'unk', not {oov!r}")
        self._symbols = symbols
        self._ids = {ch: i for i, ch in enumerate(symbols) if i >= len(RESERVED)}
        self.oov = oov
        self.normalizer = TextNormalizer(normalizer)

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], normalizer: NormalizerConfig | None = None, oov: Literal["error", "unk"] = "error"
    ) -> CharTokenizer:
        """A vocabulary of every character of the normalised texts, in code point order."""
        norm = TextNormalizer(normalizer)
        chars: set[str] = set()
        for text in texts:
            chars.update(norm.normalize(text))
        return cls([*RESERVED, *sorted(chars)], oov=oov, normalizer=normalizer)

    @classmethod
    def load(
        cls, path: str | os.PathLike, oov: Literal["error", "unk"] = "error", normalizer: NormalizerConfig | None = None
    ) -> CharTokenizer:
        """Reads a vocabulary file written by `save`."""
        try:
            with open(path, encoding="utf-8", newline="\n") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise VocabError(f"{path}: cannot read vocabulary: {err}") from err
        if lines and lines[-1] == "":
            lines.pop()
        try:
            return cls([_line_to_symbol(line) for line in lines], oov=oov, normalizer=normalizer)
        except VocabError as err:
            raise VocabError(f"{path}: {err}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes one symbol per line in id order (UTF-8), atomically."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(_symbol_to_line(s) + "\n" for s in self._symbols))
        os.replace(tmp, path)

    @property
    def symbols(self) -> list[str]:
        """All symbols in id order (a copy), e.g. to store in a checkpoint."""
        return list(self._symbols)

    def __len__(self) -> int:
        return len(self._symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self._symbols == other._symbols

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self)} symbols, oov={self.oov!r})"

    def normalize(self, text: str) -> str:
        """The text as this tokenizer sees it."""
        return self.normalizer.normalize(text)

    def encode(self, text: str, utt_id: str | None = None) -> list[int]:
        """Ids of the normalised text, without [GO]/[EOS]; OOVError names `utt_id` (oov="error")."""
        text = self.normalize(text)
        ids = [self._ids.get(ch, -1) for ch in text]
        if -1 in ids:
            if self.oov == "error":
                raise OOVError(utt_id, [ch for ch, i in zip(text, ids) if i < 0])
            ids = [self.unk_id if i < 0 else i for i in ids]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids up to the first [EOS]; blanks and [GO] are skipped, [UNK] is U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.blank_id, self.go_id):
                continue
            if i == self.unk_id:
                out.append(UNK_CHAR)
            elif 0 <= i < len(self._symbols):
                out.append(self._symbols[i])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self)} symbols")
        return "".join(out)
