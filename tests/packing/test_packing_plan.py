"""plan_packs (best-fit-decreasing), sorted and naive batching: invariants, determinism, quality."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longalign.packing import plan_naive, plan_next_fit, plan_packs, plan_sorted
from longalign.packing.plan import _CapacityIndex, lower_bound_rows, packed_efficiency, padded_efficiency
from longalign.packing.refill import refill

# Capacities that exercise 1, 2, 3 and 4 levels of the capacity bitset and the word edges.
MAX_LENS = [1, 2, 63, 64, 65, 100, 4095, 4096, 4097, 262143, 262144, 300000]


def reference_bfd_row_sums(lengths: list[int], max_len: int) -> list[int]:
    """Plain O(n^2) best-fit-decreasing; returns the sorted row sums.

    Which of several rows with equal remaining space takes an item does not change the multiset
    of remaining capacities, so any correct BFD gives the same sorted row sums.
    """
    remaining: list[int] = []
    for size in sorted((x for x in lengths if x <= max_len), reverse=True):
        fits = [i for i, r in enumerate(remaining) if r >= size]
        if fits:
            best = min(fits, key=lambda i: remaining[i])
            remaining[best] -= size
        else:
            remaining.append(max_len - size)
    return sorted(max_len - r for r in remaining)


@st.composite
def length_lists(draw):
    max_len = draw(st.sampled_from(MAX_LENS))
    item = st.one_of(
        st.integers(0, max_len),
        st.sampled_from([0, max_len, max_len + 1, max_len // 2, max_len // 2 + 1]),
        st.integers(max_len + 1, max_len * 2 + 2),
    )
    return draw(st.lists(item, max_size=60)), max_len


@settings(max_examples=300, deadline=None)
@given(length_lists(), st.integers(0, 2**32 - 1))
def test_plan_packs_invariants(case, seed):
    lengths, max_len = case
    rows = plan_packs(lengths, max_len, seed=seed)
    placed = [i for row in rows for i in row]
    assert Counter(placed) == Counter(i for i, n in enumerate(lengths) if n <= max_len)
    assert all(row for row in rows)
    assert all(sum(lengths[i] for i in row) <= max_len for row in rows)
    # best-fit-decreasing, then the refill pass, which may only remove rows down to the bound
    reference = reference_bfd_row_sums(lengths, max_len)
    sums = sorted(sum(lengths[i] for i in row) for row in rows)
    assert lower_bound_rows(sum(sums), max_len) <= len(rows) <= len(reference)
    if len(rows) == len(reference):
        assert sums == reference
    assert plan_packs(lengths, max_len, seed=seed) == rows


def test_plan_packs_edges():
    assert plan_packs([], 10) == []
    assert plan_packs([11, 12], 10) == []
    assert plan_packs([10], 10) == [[0]]
    # zero-length items join the fullest row and open a row only when there is none
    assert plan_packs([0, 0], 10) == [[0, 1]]
    rows = plan_packs([10, 0, 3], 10)
    assert sorted(map(sorted, rows)) == [[0, 1], [2]]
    with pytest.raises(ValueError):
        plan_packs([-1], 10)
    with pytest.raises(ValueError):
        plan_packs([1], 0)


@pytest.mark.parametrize("lengths", [[5, 4, 10, 3, 3, 8, 7], [9, 10, 6, 10, 9, 4, 7, 5],
                                     [6, 4, 4, 7, 11, 8, 7, 10]])
def test_refill_reaches_the_bound_where_bfd_does_not(lengths):
    max_len = 20
    bound = lower_bound_rows(sum(lengths), max_len)
    assert len(reference_bfd_row_sums(lengths, max_len)) == bound + 1
    rows = plan_packs(lengths, max_len)
    assert len(rows) == bound
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= max_len for row in rows)
    for row in rows:
        assert [lengths[i] for i in row] == sorted((lengths[i] for i in row), reverse=True)


def test_refill_leaves_an_unimprovable_plan_alone():
    # three items over half the row: three rows are needed although the bound says two
    rows = refill([[0], [1], [2]], np.array([11, 11, 11]), 20)
    assert rows == [[0], [1], [2]]


def test_plan_packs_within_row_order_is_decreasing():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 500, 400).tolist()
    for row in plan_packs(lengths, 1000, seed=5):
        sizes = [lengths[i] for i in row]
        assert sizes == sorted(sizes, reverse=True)


def test_plan_packs_seed_changes_ties_and_row_order():
    lengths = [5] * 40 + [3] * 20
    plans = {s: plan_packs(lengths, 10, seed=s) for s in range(4)}
    assert plans[0] == plan_packs(lengths, 10, seed=0)
    assert len({repr(p) for p in plans.values()}) == 4
    # the seed never changes the quality
    assert len({len(p) for p in plans.values()}) == 1


def longalign_mix(seed: int, n_long: int, n_short: int) -> np.ndarray:
    """LongAlign-like lengths: long samples log-normal around 16k (8k-64k), short around 900."""
    rng = np.random.default_rng(seed)
    long = np.clip(rng.lognormal(math.log(16384), 0.5, n_long), 8192, 65536)
    short = np.clip(rng.lognormal(math.log(900), 1.0, n_short), 20, 8192)
    return np.concatenate([long, short]).astype(np.int64)


def next_fit_rows(lengths: np.ndarray, max_len: int) -> int:
    """Rows used by LongAlign's own packing: greedy next-fit in file order."""
    rows, used = 1, 0
    for n in lengths.tolist():
        if used + n > max_len:
            rows, used = rows + 1, 0
        used += n
    return rows


@pytest.mark.parametrize("n_long,n_short", [(150, 900), (1000, 6000)])
def test_plan_packs_reaches_the_lower_bound(n_long, n_short):
    max_len = 65536
    for seed in range(3):
        lengths = longalign_mix(seed, n_long, n_short)
        rows = plan_packs(lengths, max_len, seed=seed)
        bound = lower_bound_rows(int(lengths.sum()), max_len)
        assert len(rows) == bound
        best_possible = lengths.sum() / (bound * max_len)
        eff = packed_efficiency(lengths, rows, max_len)
        assert eff == pytest.approx(best_possible)
        # >= 99.9% unless the bound itself forbids it (the rounding up of the last row)
        assert eff >= min(0.999, best_possible - 1e-12)
        # greedy next-fit in file order, LongAlign's own packing, is far worse
        shuffled = lengths[np.random.default_rng(seed).permutation(len(lengths))]
        assert lengths.sum() / (next_fit_rows(shuffled, max_len) * max_len) < 0.92 < eff


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_packs_on_the_full_longalign_mix(seed):
    """The issue's acceptance mix: 10k samples of 8k-64k tokens (log-normal around 16k) and 60k of
    20-8,192 tokens (log-normal around 900), in shuffled order, at max_len 65,536."""
    max_len = 65536
    lengths = longalign_mix(seed, 10_000, 60_000)
    lengths = lengths[np.random.default_rng(seed).permutation(len(lengths))]
    assert lengths.min() >= 20 and lengths.max() <= max_len
    rows = plan_packs(lengths, max_len, seed=seed)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    sums = np.array([int(lengths[row].sum()) for row in rows])
    assert sums.max() <= max_len
    bound = lower_bound_rows(int(lengths.sum()), max_len)
    assert len(rows) <= 1.001 * bound + 1
    assert packed_efficiency(lengths, rows, max_len) >= 0.999
    assert next_fit_rows(lengths, max_len) > 1.1 * len(rows)


def test_plan_sorted_groups_are_consecutive_sorted_lengths():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 1000, 103).tolist()
    groups = plan_sorted(lengths, 8, seed=2)
    assert sorted(i for g in groups for i in g) == list(range(103))
    assert sorted(len(g) for g in groups) == [7] + [8] * 12
    by_start = sorted(groups, key=lambda g: (lengths[g[0]], g[0]))
    flat = [lengths[i] for g in by_start for i in g]
    assert flat == sorted(lengths)
    assert all(len(g) == 8 for g in by_start[:-1])  # only the longest group is short
    assert plan_sorted(lengths, 8, seed=2) == groups
    assert plan_sorted(lengths, 8, seed=3) != groups
    assert padded_efficiency(lengths, groups) > padded_efficiency(lengths, plan_naive(103, 8, seed=2))


def test_plan_naive_is_a_seeded_permutation():
    groups = plan_naive(10, 4, seed=0)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert sorted(i for g in groups for i in g) == list(range(10))
    assert plan_naive(10, 4, seed=0) == groups
    assert plan_naive(10, 4, seed=1) != groups


def test_padded_efficiency():
    assert padded_efficiency([1, 3, 2, 2], [[0, 1], [2, 3]]) == pytest.approx(8 / 10)


@pytest.mark.slow
def test_plan_packs_one_million_lengths():
    """Correctness at the benchmark's scale (its speed is measured by bench/packing_bench.py)."""
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(math.log(2000), 1.2, 1_000_000), 1, 65536).astype(np.int64)
    rows = plan_packs(lengths, 65536, seed=0)
    flat = np.fromiter((i for row in rows for i in row), dtype=np.int64)
    assert np.array_equal(np.sort(flat), np.arange(len(lengths)))
    assert max(int(lengths[row].sum()) for row in rows) <= 65536
    assert len(rows) <= 1.001 * lower_bound_rows(int(lengths.sum()), 65536) + 1


def test_plan_next_fit_is_greedy_in_file_order():
    from longalign.packing import plan_next_fit

    assert plan_next_fit([5, 5, 5, 3, 11, 2, 9], 10) == [[0, 1], [2, 3, 5], [6]]
    assert plan_next_fit([], 10) == []


# -- the baselines and the efficiency numbers the packing report prints -----------------------
def test_plan_sorted_is_longaligns_sorted_batching():
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 4, size=101).tolist()  # many ties: the sort must be stable
    groups = plan_sorted(lengths, 8, seed=1)
    assert sorted(len(g) for g in groups) == [5] + [8] * 12
    assert sorted(i for g in groups for i in g) == list(range(101))
    by_length = sorted(range(101), key=lambda i: (lengths[i], i))  # ascending, ties in index order
    expected = [by_length[k:k + 8] for k in range(0, 101, 8)]
    assert sorted(groups) == sorted(expected)  # the same groups, in a shuffled order
    assert groups != expected and groups == plan_sorted(lengths, 8, seed=1)
    assert plan_sorted(lengths, 8, seed=2) != groups
    assert plan_sorted(lengths, 101) == [by_length] and plan_sorted([], 4) == []
    assert plan_sorted(lengths, 8) == plan_sorted(lengths, 8, seed=0)  # the default seed is 0
    assert sorted(plan_sorted(lengths, 1)) == [[i] for i in range(101)]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        plan_sorted(lengths, 0)


def test_plan_naive_shuffles_then_cuts():
    groups = plan_naive(50, 8, seed=3)
    assert [len(g) for g in groups] == [8] * 6 + [2]
    assert sorted(i for g in groups for i in g) == list(range(50))
    assert [i for g in groups for i in g] != list(range(50))  # shuffled
    assert groups == plan_naive(50, 8, seed=3) and groups != plan_naive(50, 8, seed=4)
    assert plan_naive(50, 8) == plan_naive(50, 8, seed=0)  # the default seed is 0
    assert sorted(plan_naive(3, 1)) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        plan_naive(50, 0)


def test_plan_next_fit_is_greedy_in_order():
    assert plan_next_fit([4, 4, 3, 6, 2, 11, 1], 10) == [[0, 1], [2, 3], [4, 6]]  # 11 is too long: left out
    assert plan_next_fit([5, 5, 10, 1], 10) == [[0, 1], [2], [3]]  # an exact fit stays in the row
    assert plan_next_fit([], 10) == [] and plan_next_fit([12], 10) == []
    assert plan_next_fit([1, 9, 1], 10) == [[0, 1], [2]]  # the first item opens the first row


def test_efficiencies_and_the_lower_bound():
    lengths = [4, 4, 3, 6, 2, 11, 1]
    assert packed_efficiency(lengths, [[0, 1], [2, 3], [4, 6]], 10) == pytest.approx(20 / 30)
    assert packed_efficiency(lengths, [], 10) == 0.0
    assert padded_efficiency([1, 3, 5, 9], [[0, 1], [2, 3], []]) == pytest.approx(18 / 24)
    assert padded_efficiency([1, 3], []) == 0.0 and padded_efficiency([2, 2], [[0, 1]]) == 1.0
    assert [lower_bound_rows(t, 10) for t in (-15, -5, 0, 1, 9, 10, 11, 20, 21)] == [0, 0, 0, 1, 1, 1, 2, 2, 3]


def test_the_capacity_index_returns_the_least_capacity_that_fits():
    """Best fit: of the open rows with room for ``need``, the one with the least room, also when
    the capacities share a 64-bit word of the index and when they lie in different words."""
    index = _CapacityIndex(300)
    for row, cap in enumerate([130, 100, 70, 250, 66]):
        index.add(cap, row)
    assert index.pop_at_least(10) == (66, 4)  # nothing in the first word: the least of the next ones
    assert index.pop_at_least(67) == (70, 2)  # in the word of the need itself
    assert index.pop_at_least(67) == (100, 1)
    assert index.pop_at_least(131) == (250, 3)
    assert index.pop_at_least(131) is None and index.pop_at_least(1) == (130, 0)
