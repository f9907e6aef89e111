"""Text cleaning, token counting and paragraph splitting."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from longalign.sourcing.split import Piece, plan, split_text
from longalign.sourcing.text import TokenCounter, clean_text, sha256_hex

GAP = re.compile(r"\s*")


class WordCounter:
    """A stand-in tokenizer: one token per whitespace-separated word (fast and predictable)."""

    def count(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]


def assert_exact_cover(text: str, pieces: list[Piece]) -> None:
    """Pieces are exact slices; everything between / around them is whitespace holding a newline."""
    assert pieces
    pos = 0
    for k, piece in enumerate(pieces):
        assert text[piece.start:piece.end] == piece.text
        gap = text[pos:piece.start]
        assert GAP.fullmatch(gap), gap
        if k > 0:
            assert "\n" in gap
        pos = piece.end
    assert GAP.fullmatch(text[pos:])
    rebuilt = "".join(text[a.end:b.start] + b.text for a, b in zip([Piece(0, 0, "", 0)] + pieces, pieces))
    assert rebuilt + text[pieces[-1].end:] == text


def test_clean_text_reasons() -> None:
    assert clean_text(b"hello\n") == ("hello\n", "", "")
    assert clean_text(b"\xef\xbb\xbfwith bom") == ("with bom", "", "")
    assert clean_text(b"caf\xe9")[1] == "undecodable"
    assert clean_text(b"ab\x00cd")[1] == "binary"
    assert clean_text("ab\x00cd")[1] == "binary"
    assert clean_text(" \n\t\n")[1] == "empty"
    assert clean_text(b"")[1] == "empty"
    assert clean_text("\x01\x02\x03\x04 ok")[1] == "binary"
    assert clean_text("mostly fine \x01")[1] == ""


def test_clean_text_normalises_to_nfc() -> None:
    decomposed = "cafe\u0301"
    text, reason, _ = clean_text(decomposed.encode("utf-8"))
    assert reason == "" and text == "caf\u00e9"
    assert unicodedata.is_normalized("NFC", text)
    assert sha256_hex(text) == sha256_hex(clean_text("caf\u00e9")[0])


def test_token_counter_matches_tokenizer_without_special_tokens() -> None:
    from longalign.models import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    texts = ["def f(x):\n    return x\n", "", "word " * 5000]
    counts = TokenCounter(tokenizer).count(texts)
    assert counts == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert counts[1] == 0 and counts[2] >= 5000


def test_token_counter_chunks_long_texts_exactly_for_byte_level_bpe() -> None:
    from longalign.models import load_tokenizer
    from longalign.sourcing.text import chunks

    tokenizer = load_tokenizer("embedded:tiny")
    text = "".join(f"def f{i}(x):\n    return x * {i}  # caf\u00e9\n\n" for i in range(400))
    pieces = chunks(text, 1000)
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(len(p) <= 1000 for p in pieces) and all(p.startswith("\ndef") for p in pieces[1:])
    exact = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    small = TokenCounter(tokenizer, chunk_chars=1000)
    assert small.count([text, "short", text[:500]]) == TokenCounter(tokenizer).count([text, "short", text[:500]])
    assert small.count([text])[0] == exact
    assert chunks("x" * 2500, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]  # no boundary: hard cuts


def test_plan_balances_instead_of_leaving_a_scrap() -> None:
    # 11 units of 10: budget 100 must give two pieces of about 55, not 100 + 10.
    groups = plan([10] * 11, 100)
    sizes = [10 * (j - i) for i, j in groups]
    assert sizes in ([60, 50], [50, 60])
    assert plan([10] * 5, 100) == [(0, 5)]


def test_split_pieces_within_range_and_text_preserved() -> None:
    paragraphs = [" ".join(f"w{p}_{i}" for i in range(7 + p % 5)) for p in range(60)]
    text = "\n\n".join(paragraphs) + "\n"
    pieces = split_text(text, WordCounter(), 100)
    assert len(pieces) >= 6
    assert all(50 <= p.n_tokens <= 100 for p in pieces)
    assert_exact_cover(text, pieces)
    # Cuts fall between paragraphs: every paragraph lies whole inside one piece.
    assert sum(p.text.count("\n\n") + 1 for p in pieces) == len(paragraphs)


def test_split_keeps_indentation_and_uneven_blank_lines() -> None:
    text = "def f():\n    a = 1\n\n  \n\n    return a\n\n\nclass C:\n    x = 2\n" * 10
    pieces = split_text(text, WordCounter(), 12)
    assert_exact_cover(text, pieces)
    assert all(p.n_tokens <= 12 for p in pieces)
    assert any(p.text.startswith("    return a") for p in pieces)


def test_split_falls_back_to_lines_and_flags_unsplittable_lines() -> None:
    long_paragraph = "\n".join("a b c d e" for _ in range(10))  # 50 words, no blank line
    pieces = split_text(long_paragraph, WordCounter(), 20)
    assert_exact_cover(long_paragraph, pieces)
    assert all(p.n_tokens <= 20 for p in pieces) and len(pieces) == 3
    one_line = "x " * 30
    [piece] = split_text(one_line, WordCounter(), 20)
    assert piece.n_tokens == 30  # nothing to cut at: the caller rejects it as too_long


def test_split_with_real_tokenizer_exact_counts() -> None:
    from longalign.models import load_tokenizer

    counter = TokenCounter(load_tokenizer("embedded:tiny"))
    text = "\n\n".join(f"def function_{i}(x):\n    return x * {i} + len('{i * 'ab'}')"
                       for i in range(80))
    pieces = split_text(text, counter, 300)
    assert_exact_cover(text, pieces)
    assert [p.n_tokens for p in pieces] == counter.count([p.text for p in pieces])
    assert all(p.n_tokens <= 300 for p in pieces)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.text("ab ", min_size=1, max_size=12), min_size=1, max_size=4), max_size=25),
    st.lists(st.sampled_from(["\n\n", "\n \n", "\n\n\n", "\n"]), min_size=25, max_size=25),
    st.integers(3, 30),
)
def test_split_property_exact_cover(paras: list[list[str]], seps: list[str], max_tokens: int) -> None:
    text = "".join(sep + "\n".join(lines) for sep, lines in zip(seps, paras)) + "\n"
    pieces = split_text(text, WordCounter(), max_tokens)
    if not text.strip():
        assert pieces == []
        return
    assert_exact_cover(text, pieces)
    longest_line = max(len(line.split()) for line in text.split("\n"))
    if longest_line <= max_tokens:
        assert all(p.n_tokens <= max_tokens for p in pieces)
    assert sum(p.n_tokens for p in pieces) == len(text.split())
