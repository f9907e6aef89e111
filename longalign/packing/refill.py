"""A repair pass after best-fit-decreasing: try to empty the least-filled rows.

Best-fit-decreasing (BFD) often ends one row above the lower bound ``ceil(total / max_len)``: the
last row it opens holds a few of the smallest items, while every other row keeps a gap smaller
than those items. ``refill`` takes the least-filled row out and places its items, largest first:

- into the row with the smallest gap that holds the item (best fit), if there is one;
- else by merging gaps: for a row ``A`` with one of the largest gaps, it looks for an item ``y``
  of ``A`` and a smaller item ``z`` of another row ``B`` whose difference ``d = y - z`` both
  widens ``A``'s gap enough for the item (``gap(A) + d >= item``) and fits ``B``'s gap
  (``d <= gap(B)``), preferring the pair that leaves ``B`` fullest. ``y`` and ``z`` change
  rows and the item goes into ``A``. Candidates ``z`` lie in the narrow size window
  ``[y - max gap, y - (item - gap(A))]`` of the items sorted by length, so each search is a
  binary search plus a short vectorised scan.

If every item of the row finds a place, the row is gone and the next least-filled row is tried,
until the lower bound is reached; otherwise the attempt is undone and the plan stays as it was.
The pass never adds a row or overfills one, and it is deterministic. Its cost is one sort,
O(n log n), plus a few scans per re-placed item; the exchange searches stop after ``BUDGET``
candidate items in all, so a pathological input cannot make it slow.
"""

from __future__ import annotations

import math

import numpy as np

_FAR = np.iinfo(np.int64).max
GAP_ROWS = 256  # rows with the largest gaps tried as the receiving row of an exchange
BUDGET = 50_000  # items y examined by exchange searches in one refill call (bounds the cost)


def refill(rows: list[list[int]], lengths: np.ndarray, max_len: int) -> list[list[int]]:
    """Return ``rows`` with as many of its least-filled rows emptied as the pass manages (the
    input is not modified). Rows keep their items in non-increasing length order."""
    fills = np.array([int(lengths[r].sum()) for r in rows], dtype=np.int64)
    bound = math.ceil(int(fills.sum()) / max_len) if len(rows) else 0
    if len(rows) <= bound:
        return rows
    rows = [list(r) for r in rows]
    lengths = np.asarray(lengths, dtype=np.int64)
    budget = [BUDGET]
    while len(rows) > bound:
        victim = int(np.flatnonzero(fills == fills.min())[-1])
        changed = _empty_row(rows, fills, victim, lengths, max_len, budget)
        if changed is None:
            break
        for r, items in changed.items():
            rows[r] = sorted(items, key=lambda i: -int(lengths[i]))
        del rows[victim]
        fills = np.array([int(lengths[r].sum()) for r in rows], dtype=np.int64)
    return rows


def _empty_row(rows: list[list[int]], fills: np.ndarray, victim: int, lengths: np.ndarray,
               max_len: int, budget: list[int]) -> dict[int, list[int]] | None:
    """Place the items of row ``victim`` in the other rows; return the new item lists of the rows
    that changed, or None if some item finds no place (nothing is modified then)."""
    gaps = max_len - fills
    gaps[victim] = -1  # nothing goes back into the row being emptied
    where = np.full(len(lengths), -1, dtype=np.int64)  # row of each item; -1: not in a row
    for r, row in enumerate(rows):
        if r != victim:
            where[row] = r
    placed = np.flatnonzero(where >= 0)
    by_size = placed[np.argsort(lengths[placed], kind="stable")]
    sizes = lengths[by_size]
    changed: dict[int, list[int]] = {}

    def members(r: int) -> list[int]:
        if r not in changed:
            changed[r] = list(rows[r])
        return changed[r]

    def move(item: int, src: int, dst: int) -> None:
        if src >= 0:
            members(src).remove(item)
        members(dst).append(item)
        where[item] = dst

    for x in sorted(rows[victim], key=lambda i: -int(lengths[i])):
        need = int(lengths[x])
        fit = np.where(gaps >= need, gaps, _FAR)
        best = int(fit.argmin())
        if fit[best] != _FAR:
            move(x, -1, best)
            gaps[best] -= need
            continue
        exchange = _find_exchange(need, gaps, where, by_size, sizes, lengths, members, budget)
        if exchange is None:
            return None
        a, y, b, z = exchange
        d = int(lengths[y] - lengths[z])
        move(y, a, b)
        move(z, b, a)
        move(x, -1, a)
        gaps[a] += d - need
        gaps[b] -= d
    return changed


def _find_exchange(need: int, gaps: np.ndarray, where: np.ndarray, by_size: np.ndarray,
                   sizes: np.ndarray, lengths: np.ndarray, members,
                   budget: list[int]) -> tuple[int, int, int, int] | None:
    """(A, y, B, z): y in row A, z in row B, swapping them makes room for ``need`` in A.
    ``budget[0]`` counts down the items y examined; None once it is spent."""
    max_gap = int(gaps.max())
    if max_gap <= 0:
        return None
    top = np.argsort(-gaps, kind="stable")[:GAP_ROWS]
    for a in top.tolist():
        d_min = need - int(gaps[a])
        if d_min > max_gap:
            break  # B cannot absorb the difference
        best = None
        for y in members(a):
            budget[0] -= 1
            if budget[0] < 0:
                return None
            ly = int(lengths[y])
            lo = np.searchsorted(sizes, ly - max_gap, side="left")
            hi = np.searchsorted(sizes, ly - d_min, side="right")
            if lo >= hi:
                continue
            z = by_size[lo:hi]
            rz = where[z]
            slack = gaps[np.maximum(rz, 0)] - (ly - sizes[lo:hi])  # B's gap after the exchange
            ok = (rz >= 0) & (rz != a) & (slack >= 0)
            if ok.any():
                k = int(np.flatnonzero(ok)[slack[ok].argmin()])
                if best is None or slack[k] < best[0]:
                    best = (int(slack[k]), y, int(rz[k]), int(z[k]))
        if best is not None:
            return a, best[1], best[2], best[3]
    return None
