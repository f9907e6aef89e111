"""Exact-match scoring of short free-form answers.

Normalisation (applied to the expected string and to the answer alike):

1. Unicode NFKC, then ``casefold`` (so full-width digits and upper/lower case compare equal);
2. a comma between two digits is deleted (``1,234,567`` -> ``1234567``: thousands separators);
3. every run of characters that are neither letters nor digits (whitespace, punctuation, quotes,
   hyphens, Markdown markup, ...) becomes one space, and the ends are stripped.

An answer matches an expected string when the normalised expected string is non-empty and occurs in
the normalised answer as a sequence of whole words: ``" " + expected + " "`` is a substring of
``" " + answer + " "``. So ``"**1234567**."`` matches ``1234567``, but ``12345678`` and ``x1234567``
do not, and a UUID matches whatever quoting surrounds it (its hyphens become spaces on both sides).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Normalise ``text`` for exact matching (see the module docstring for the exact rules)."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = _DIGIT_COMMA.sub("", text)
    return _NON_WORD.sub(" ", text).strip()


def exact_match(expected: str, answer: str) -> bool:
    """True if the normalised ``expected`` occurs in the normalised ``answer`` as whole words."""
    want = normalize(expected)
    if not want:
        return False
    return f" {want} " in f" {normalize(answer)} "


def set_score(gold: Iterable[str], universe: Iterable[str], answer: str) -> float:
    """Jaccard overlap between ``gold`` and the items of ``universe`` that the answer names.

    The predicted set is every item of ``universe`` (all candidates the prompt offered, gold ones
    included) that ``exact_match`` finds in ``answer``. The score is |pred & gold| / |pred | gold|:
    1.0 for exactly the gold set, 0.0 for an empty answer, and naming wrong candidates costs as much
    as missing right ones.
    """
    gold_set = set(gold)
    candidates = set(universe) | gold_set
    pred = {item for item in candidates if exact_match(item, answer)}
    union = pred | gold_set
    return len(pred & gold_set) / len(union) if union else 0.0
