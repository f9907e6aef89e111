"""Cheap quality filters applied to every cleaned document before token counting.

- ``non_text``: too few letters among the non-space characters (tables of numbers, hex dumps,
  encoded data), or too much of the text in "words" of 100+ characters (base64, minified code);
- ``repeated_lines``: too much of the text in lines that repeat an earlier line (boilerplate,
  logs, generated files). Lines are compared stripped; blank lines do not count.

Each threshold can be switched off: ``min_alpha_fraction=0``, ``max_long_word_fraction=1``,
``max_repeated_line_fraction=1``. Documents below ``min_tokens`` are rejected later as
``too_short`` once their tokens are counted.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Optional

_LETTERS = re.compile(r"[^\W\d_]+")
_SPACE = re.compile(r"\s+")
_LONG_WORD = re.compile(r"\S{100,}")
LONG_WORD_CHARS = 100


def alpha_fraction(text: str) -> tuple[float, int]:
    """(share of letters among non-space characters, number of non-space characters)."""
    dense = _SPACE.sub("", text)
    if not dense:
        return 0.0, 0
    return (len(dense) - len(_LETTERS.sub("", dense))) / len(dense), len(dense)


def long_word_fraction(text: str, dense: int) -> float:
    if not dense:
        return 0.0
    return sum(len(w) for w in _LONG_WORD.findall(text)) / dense


def repeated_line_fraction(text: str) -> float:
    """Share of characters (of non-blank stripped lines) in lines seen earlier in the text."""
    counts = Counter(line.strip() for line in text.splitlines())
    counts.pop("", None)
    total = sum(len(line) * n for line, n in counts.items())
    if not total:
        return 0.0
    return sum(len(line) * (n - 1) for line, n in counts.items()) / total


def quality_issue(text: str, min_alpha: float, max_long_words: float,
                  max_repeated: float) -> Optional[tuple[str, str]]:
    """None for a text that passes, else (reason, detail)."""
    if min_alpha > 0 or max_long_words < 1:
        alpha, dense = alpha_fraction(text)
        if alpha < min_alpha:
            return "non_text", f"letters are {alpha:.0%} of characters < {min_alpha:.0%}"
        if max_long_words < 1:
            share = long_word_fraction(text, dense)
            if share > max_long_words:
                return "non_text", (f"{share:.0%} of characters in words of {LONG_WORD_CHARS}+ "
                                    f"characters > {max_long_words:.0%}")
    if max_repeated < 1:
        share = repeated_line_fraction(text)
        if share > max_repeated:
            return "repeated_lines", f"{share:.0%} of characters in repeated lines > {max_repeated:.0%}"
    return None
