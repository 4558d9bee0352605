"""Text normalisation and the character tokenizer."""

from __future__ import annotations

import random
import unicodedata

import pytest

from asr.errors import AsrError
from asr.text import (
    RESERVED,
    UNK_CHAR,
    CharTokenizer,
    NormalizerConfig,
    OOVError,
    TextNormalizer,
    VocabError,
)

# Characters the random strings draw from: ASCII, accents (precomposed and combining), CJK,
# punctuation of several scripts, apostrophes, odd spaces, ligatures and full-width forms (NFKC).
ALPHABET = (
    "abcXYZ 019'.,!?-"
    "éÉñÑüßøæ\u0301\u0308"
    "日本語中文한국어"
    "«»“”’ʼ—…¿¡"
    "\t\n\u00a0\u2003"
    "ﬁﬂＡｂ１²"
    "İΣσςДж"
)


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello,  World!", "hello world"),
        ("  don't STOP  ", "don't stop"),
        ("'quoted' students' books", "quoted students books"),
        ("rock\u2019n\u2019roll", "rock'n'roll"),  # typographic apostrophes inside words become ASCII
        ("well-known", "well known"),
        ("ﬁne Ｗｏｒｄ", "fine word"),  # NFKC folds ligatures and full-width letters
        ("tab\tand\nnewline", "tab and newline"),
        ("", ""),
        ("?!...", ""),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert TextNormalizer().normalize(raw) == expected


def test_normalize_options_off_leave_text_alone() -> None:
    cfg = NormalizerConfig(unicode_form=None, lowercase=False, strip_punctuation=False, collapse_spaces=False)
    text = " A,  b\u2019C ﬁ "
    assert TextNormalizer(cfg).normalize(text) == text


def test_normalize_is_idempotent_on_random_unicode() -> None:
    norm = TextNormalizer()
    for text in random_texts(3000, seed=1):
        once = norm.normalize(text)
        assert norm.normalize(once) == once, repr(text)
        assert unicodedata.normalize("NFKC", once) == once
        assert "  " not in once and once == once.strip()


def test_reserved_ids_and_sorted_characters() -> None:
    tok = CharTokenizer.from_texts(["b a", "c"])
    assert tok.symbols == [*RESERVED, " ", "a", "b", "c"]
    assert (tok.blank_id, tok.pad_id, tok.go_id, tok.eos_id, tok.unk_id) == (0, 0, 1, 2, 3)
    assert len(tok) == 8
    assert tok.encode("A b") == [5, 4, 6]


def test_round_trip_on_random_unicode() -> None:
    texts = random_texts(2000, seed=2)
    tok = CharTokenizer.from_texts(texts)
    for text in texts:
        ids = tok.encode(text)
        assert all(4 <= i < len(tok) for i in ids)
        assert tok.decode(ids) == tok.normalize(text)


def test_round_trip_hypothesis() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text())
    def check(text: str) -> None:
        tok = CharTokenizer.from_texts([text])
        assert tok.decode(tok.encode(text)) == tok.normalize(text)

    check()


def test_decode_stops_at_eos_and_skips_blank_and_go() -> None:
    tok = CharTokenizer.from_texts(["ab"])
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    assert tok.decode([tok.go_id, a, tok.blank_id, b, tok.eos_id, a]) == "ab"
    assert tok.decode([a, tok.unk_id]) == "a" + UNK_CHAR
    with pytest.raises(ValueError):
        tok.decode([len(tok)])


def test_oov_error_names_utterance_and_characters() -> None:
    tok = CharTokenizer.from_texts(["abc"])
    with pytest.raises(OOVError) as info:
        tok.encode("abxyx", utt_id="utt-7")
    assert isinstance(info.value, AsrError)
    assert info.value.chars == ["x", "y"]
    assert "utt-7" in str(info.value) and "'x'" in str(info.value) and "'y'" in str(info.value)


def test_oov_unk_maps_to_unk_id() -> None:
    tok = CharTokenizer(CharTokenizer.from_texts(["abc"]).symbols, oov="unk")
    assert tok.encode("axb") == [4, tok.unk_id, 5]


def test_save_load_round_trip_with_space_and_control_characters(tmp_path) -> None:
    tok = CharTokenizer.from_texts(["a b\tc\u2028é日"], normalizer=NormalizerConfig(collapse_spaces=False))
    path = tmp_path / "vocab.txt"
    tok.save(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[:4] == list(RESERVED)
    assert "<space>" in lines and "<U+0009>" in lines and "<U+2028>" in lines and "日" in lines
    assert CharTokenizer.load(path).symbols == tok.symbols


def test_load_rejects_bad_files(tmp_path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(VocabError, match="vocab.txt"):
        CharTokenizer.load(path)
    path.write_text("\n".join([*RESERVED, "ab"]) + "\n", encoding="utf-8")
    with pytest.raises(VocabError, match="single characters"):
        CharTokenizer.load(path)
    with pytest.raises(VocabError):
        CharTokenizer.load(tmp_path / "missing.txt")
