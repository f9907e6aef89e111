"""Splitting over-long documents at paragraph boundaries.

A paragraph boundary is a run of one or more blank lines (lines holding only spaces or tabs).
A paragraph that alone is longer than ``max_tokens`` is cut further at line boundaries; a single
line longer than that stays whole (its piece is then rejected as ``too_long``).

Pieces are exact slices of the text: ``text[piece.start:piece.end] == piece.text``, and what lies
between two consecutive pieces (and before the first / after the last) is only whitespace holding
the boundary. A piece keeps its leading indentation and never ends in whitespace.

The cut points balance the pieces: with ``k = ceil(remaining / budget)`` pieces still to make,
each piece aims at ``remaining / k`` tokens, so a document slightly over the limit becomes two
halves rather than one full piece plus a scrap that would fall under ``min_tokens``. Counts of
units are approximate (tokenisation is not additive), so every piece is counted again exactly and
the plan is redone with a smaller budget while a piece is over the limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from longalign.sourcing.text import TokenCounter

_BLANK_LINES = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
_NEWLINE = re.compile(r"\n")
BUDGETS = (1.0, 0.95, 0.85, 0.7)  # planning budgets (x max_tokens), tried until pieces fit


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    text: str
    n_tokens: int


def _spans(text: str, start: int, end: int, separator: re.Pattern) -> list[tuple[int, int]]:
    """Non-blank stretches of ``text[start:end]`` between matches of ``separator``.

    A stretch keeps its leading whitespace (indentation) but not its trailing whitespace.
    """
    spans, pos = [], start
    for match in separator.finditer(text, start, end):
        spans.append((pos, match.start()))
        pos = match.end()
    spans.append((pos, end))
    return [(a, a + len(text[a:b].rstrip())) for a, b in spans if text[a:b].strip()]


def _units(text: str, counter: TokenCounter, max_tokens: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Paragraph spans (long paragraphs cut into lines) and their approximate token counts.

    A unit's count covers the unit and the whitespace up to the next unit, so counts add up to
    roughly the count of any stretch of consecutive units.
    """

    def counted(spans: list[tuple[int, int]]) -> list[int]:
        nxt = [s for s, _ in spans[1:]] + [spans[-1][1]] if spans else []
        return counter.count([text[a:b] for (a, _), b in zip(spans, nxt)])

    paragraphs = _spans(text, 0, len(text), _BLANK_LINES)
    units, counts = [], []
    for span, n in zip(paragraphs, counted(paragraphs)):
        lines = _spans(text, span[0], span[1], _NEWLINE) if n > max_tokens else [span]
        if len(lines) > 1:
            units.extend(lines)
            counts.extend(counted(lines))
        else:
            units.append(span)
            counts.append(n)
    return units, counts


def plan(counts: list[int], budget: float) -> list[tuple[int, int]]:
    """Group consecutive units into balanced pieces of at most ``budget`` tokens (ranges [i, j))."""
    groups, i, remaining = [], 0, sum(counts)
    while i < len(counts):
        target = remaining / max(1, math.ceil(remaining / budget))
        acc, j = counts[i], i + 1
        while j < len(counts) and acc + counts[j] <= budget and acc + counts[j] / 2 <= target:
            acc += counts[j]
            j += 1
        groups.append((i, j))
        remaining -= acc
        i = j
    return groups


def split_text(text: str, counter: TokenCounter, max_tokens: int) -> list[Piece]:
    """Cut ``text`` into pieces of at most ``max_tokens`` tokens where the boundaries allow.

    Every piece's ``n_tokens`` is its exact count; a piece can still exceed ``max_tokens`` when a
    single line is longer than that (the caller rejects it). The caller also rejects pieces under
    its ``min_tokens``.
    """
    units, counts = _units(text, counter, max_tokens)
    if not units:
        return []
    pieces: list[Piece] = []
    for factor in BUDGETS:
        groups = plan(counts, max_tokens * factor)
        texts = [text[units[i][0]:units[j - 1][1]] for i, j in groups]
        exact = counter.count(texts)
        pieces = [
            Piece(units[i][0], units[j - 1][1], t, n) for (i, j), t, n in zip(groups, texts, exact)
        ]
        if all(p.n_tokens <= max_tokens for p in pieces):
            break
    return pieces
