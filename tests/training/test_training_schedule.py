"""Batch order per strategy and the split of optimizer steps over ranks."""

import math
from collections import Counter

import numpy as np
import pytest

from longalign.training.data import MicroBatch
from longalign.training.schedule import (balanced_deal, cost_ratio, epoch_order, epoch_steps, plan_training,
                                         row_cost, sorted_steps)


def _batches(widths, targets=None):
    out = []
    for i, w in enumerate(widths):
        n_t = targets[i] if targets else [1]
        out.append(MicroBatch(i, rows=[(0, 0, i)], seq_lens=[[w]], n_targets=[n_t]))
    return out


def test_pack_order_is_a_seeded_shuffle_per_epoch():
    batches = _batches([10] * 12)
    a0, a1 = epoch_order(batches, "pack", 0, 0), epoch_order(batches, "pack", 0, 1)
    assert sorted(a0) == list(range(12)) and a0 != list(range(12))
    assert a0 != a1
    assert a0 == epoch_order(batches, "pack", 0, 0)
    assert a0 != epoch_order(batches, "pack", 1, 0)


def _sort_plans(widths, seed, world, accum, epochs=1):
    return plan_training(_batches(widths), "sort", seed=seed, epochs=epochs, max_steps=None,
                         world_size=world, accumulation=accum)


def test_sort_groups_one_micro_step_across_ranks_and_puts_the_longest_first_once():
    widths = [50, 3, 41, 12, 30, 7, 22, 19, 60, 5, 33]
    ranked = sorted(range(len(widths)), key=lambda i: -widths[i])
    micro_steps = [ranked[k:k + 2] for k in range(0, len(ranked), 2)]  # world size 2
    firsts = set()
    for seed in range(6):
        plans = _sort_plans(widths, seed, world=2, accum=2, epochs=2)
        assert len(plans) == 2 * 3  # 6 groups of one micro-step, 2 per step, per epoch
        for plan in plans:
            assert len(plan.slots) == 2 and len({len(r) for r in plan.slots}) == 1
            for k in range(len(plan.slots[0])):  # micro-step k: both ranks run one group
                real = sorted((s.batch for r in plan.slots for s in r[k:k + 1] if s.weight),
                              key=lambda i: -widths[i])
                assert real in micro_steps
        # the leftover group (the shortest batch alone) is the epoch's last, with a filler
        assert plans[2].slots[0][-1].batch == ranked[-1] and not plans[2].slots[1][-1].weight
        assert plans[0].slots[0][0].batch == 8  # the longest runs first in the first epoch
        firsts.add(plans[3].slots[0][0].batch)
        seen = Counter(s.batch for p in plans[:3] for r in p.slots for s in r if s.weight)
        assert seen == Counter(range(len(widths)))
    assert len(firsts) > 1  # later epochs are shuffled without the longest-first rule


def test_sorted_steps_is_a_seeded_shuffle_of_micro_step_groups():
    lengths = [7, 3, 9, 1, 5, 8, 2, 6]
    a = sorted_steps(lengths, world_size=2, accumulation=1, seed=0, epoch=1)
    assert a == sorted_steps(lengths, world_size=2, accumulation=1, seed=0, epoch=1)
    others = [sorted_steps(lengths, world_size=2, accumulation=1, seed=s, epoch=1)
              for s in range(1, 8)]
    assert any(o != a for o in others)
    assert sorted(tuple(sorted(lengths[i] for r in step for i in r)) for step in a) == [
        (1, 2), (3, 5), (6, 7), (8, 9)]
    with pytest.raises(ValueError):
        sorted_steps(lengths, world_size=0, accumulation=1)


def test_sorted_batching_mixes_lengths_within_a_step_like_longalign():
    """LongAlign's mix (10k samples of 8k-64k tokens, 60k of 20-8k), 8 ranks, accumulation 12:
    each step draws 12 groups of one micro-step, so a step is all long or all short about as
    often as 12 draws from 1,250 long and 7,500 short groups are (about 16%); groups of a whole
    step (the earlier planner) made 99.9% of the steps uniform."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(8193, 65537, 10_000), rng.integers(20, 8193, 60_000)])
    rng.shuffle(lengths)
    steps = sorted_steps(lengths, world_size=8, accumulation=12, seed=0, epoch=0)
    assert sorted(i for step in steps for r in step for i in r) == list(range(len(lengths)))
    assert all(len(r) == 12 for step in steps[:-1] for r in step)
    long = lengths > 8192
    uniform = [bool(long[idx].all() or not long[idx].any())
               for idx in (np.array([i for r in step for i in r]) for step in steps)]
    share = sum(uniform) / len(uniform)
    groups_long, groups = 10_000 // 8, 70_000 // 8
    expected = math.comb(groups - groups_long, 12) / math.comb(groups, 12)  # all 12 short
    assert expected == pytest.approx(0.157, abs=0.005)
    assert share == pytest.approx(expected, abs=0.04)
    # and every micro-step is one group of similar lengths: the 8 ranks wait for each other less
    for step in steps[:50]:
        for k in range(12):
            assert len({bool(long[r[k]]) for r in step}) == 1


def test_balanced_dealing_evens_the_attention_cost_of_packed_rows():
    rng = np.random.default_rng(1)
    seq_lens = [[int(n) for n in rng.integers(100, 8000, rng.integers(1, 6))] for _ in range(64)]
    batches = [MicroBatch(i, rows=[(0, 0, i)], seq_lens=[s], n_targets=[[1] * len(s)])
               for i, s in enumerate(seq_lens)]
    kw = dict(seed=3, epochs=1, max_steps=None, world_size=4, accumulation=4)
    shuffled = plan_training(batches, "pack", balance=False, **kw)
    balanced = plan_training(batches, "pack", **kw)
    assert balanced == plan_training(batches, "pack", **kw)  # deterministic for a seed
    for a, b in zip(shuffled, balanced):  # the same rows in each step, only dealt otherwise
        assert sorted(s.batch for r in a.slots for s in r) == sorted(
            s.batch for r in b.slots for s in r)
        assert b.rank_cost_ratio <= a.rank_cost_ratio + 1e-12
        loads = [sum(row_cost(seq_lens[s.batch]) for s in r) for r in b.slots]
        assert b.rank_cost_ratio == pytest.approx(max(loads) / (sum(loads) / 4))
    mean = lambda plans: sum(p.rank_cost_ratio for p in plans) / len(plans)  # noqa: E731
    assert mean(balanced) < mean(shuffled)
    # costliest first, each to the least-loaded rank with room (at most 3 rows each here)
    assert balanced_deal([5, 4, 3, 3, 3], 2) == [[0, 3], [1, 2, 4]]


def test_split_over_ranks_is_exhaustive_even_and_exact():
    batches = _batches([10] * 7, targets=[[2, 0], [1], [3], [4], [5], [6], [7]])
    for world, accum in [(1, 1), (2, 1), (2, 2), (3, 2), (4, 1)]:
        plans = plan_training(batches, "naive", seed=0, epochs=1, max_steps=None,
                              world_size=world, accumulation=accum)
        assert len(plans) == -(-7 // (world * accum))
        seen = Counter()
        for plan in plans:
            assert len(plan.slots) == world
            assert len({len(s) for s in plan.slots}) == 1  # every rank runs as many micro-batches
            real = [slot.batch for rank in plan.slots for slot in rank if slot.weight]
            seen.update(real)
            assert plan.num_sequences == sum(batches[i].num_sequences for i in real)
            assert plan.num_tokens == sum(batches[i].num_targets for i in real)
        assert seen == Counter(range(7))  # each batch once with weight 1, fillers have weight 0


def test_distributed_sampler_like_striding_with_the_cheapest_filler():
    plans = plan_training(_batches([10, 10, 10, 10, 30, 5]), "naive", seed=0, epochs=1,
                          max_steps=None, world_size=4, accumulation=1)
    assert [[[s.batch for s in r] for r in p.slots] for p in plans] == [
        [[0], [1], [2], [3]], [[4], [5], [5], [5]]]
    assert [r[0].weight for r in plans[-1].slots] == [1.0, 1.0, 0.0, 0.0]


def test_epochs_and_max_steps():
    batches = _batches([10] * 3)
    plans = plan_training(batches, "pack", seed=0, epochs=2, max_steps=None, world_size=1,
                          accumulation=2)
    assert [(p.epoch, len(p.slots[0])) for p in plans] == [(0, 2), (0, 1), (1, 2), (1, 1)]
    plans = plan_training(batches, "pack", seed=0, epochs=1, max_steps=5, world_size=1,
                          accumulation=1)
    assert [p.epoch for p in plans] == [0, 0, 0, 1, 1] and [p.step for p in plans] == list(range(5))


def test_sorted_steps_edges():
    lengths = [7, 3, 9, 1, 5, 2, 8, 4]
    assert sorted_steps(lengths, world_size=2, accumulation=1) == sorted_steps(
        lengths, world_size=2, accumulation=1, seed=0, epoch=0)  # defaults: seed 0, epoch 0
    one = sorted_steps(lengths, world_size=1, accumulation=1)
    assert one[0] == [[2]] and sorted(s[0][0] for s in one) == list(range(8))
    assert sorted_steps([], world_size=2, accumulation=2) == []
    for world, accumulation in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=f"^world_size and accumulation must be >= 1, got {world}, "
                                             f"{accumulation}$"):
            sorted_steps(lengths, world_size=world, accumulation=accumulation)
    # with no smaller leftover group, every full group takes part in the shuffle (none is kept last)
    last = {tuple(sorted_steps(lengths, world_size=2, accumulation=1, seed=s, epoch=1)[-1][0] +
                  sorted_steps(lengths, world_size=2, accumulation=1, seed=s, epoch=1)[-1][1])
            for s in range(12)}
    assert len(last) > 1


def test_costs_and_their_ratio():
    assert row_cost([3, 4], linear=2.0) == 9 + 6 + 16 + 8 and row_cost([]) == 0.0
    assert cost_ratio([0.2, 0.6]) == pytest.approx(1.5) and cost_ratio([1.0, 3.0]) == 1.5
    assert cost_ratio([]) == 1.0 and cost_ratio([0.0, 0.0]) == 1.0
    assert balanced_deal([], 3) == [[], [], []]


def test_padded_and_packed_batches_cost_what_they_compute():
    """A padded micro-batch costs its rows at full width; a packed row only its samples."""
    padded = MicroBatch(0, rows=[(0, 0, 0), (0, 0, 1)], seq_lens=[[10], [6]], n_targets=[[1], [1]])
    packed = MicroBatch(1, rows=[(0, 0, 2)], seq_lens=[[3, 4]], n_targets=[[1, 1]])
    linear = 5.0
    (plan,) = plan_training([padded, packed], "naive", seed=0, epochs=1, max_steps=None, world_size=2,
                            accumulation=1, linear=linear)
    loads = [2 * (100 + 10 * linear), 9 + 16 + 7 * linear]
    assert plan.rank_cost_ratio == pytest.approx(max(loads) / (sum(loads) / 2))


def test_epoch_steps_shuffle_and_balance_for_pack():
    rng = np.random.default_rng(4)
    batches = [MicroBatch(i, rows=[(0, 0, i)], seq_lens=[[int(n)]], n_targets=[[1]])
               for i, n in enumerate(rng.integers(10, 500, 16))]
    kw = dict(seed=2, epoch=1, accumulation=2)
    alone = epoch_steps(batches, "pack", world_size=1, **kw)
    assert [s[0] for s in alone] == [[i for i in epoch_order(batches, "pack", 2, 1)][k:k + 2]
                                     for k in range(0, 16, 2)]  # one rank: the shuffled order as is
    assert [i for s in alone for i in s[0]] != list(range(16))
    dealt = epoch_steps(batches, "pack", world_size=2, **kw)
    assert dealt == epoch_steps(batches, "pack", world_size=2, balance=True, **kw)  # balancing is the default
    order = epoch_order(batches, "pack", 2, 1)
    for k, step in enumerate(dealt):
        chunk = order[4 * k:4 * k + 4]
        expected = balanced_deal([row_cost(batches[i].seq_lens[0]) for i in chunk], 2)
        assert step == [[chunk[j] for j in r] for r in expected]


def test_three_epochs_are_numbered_in_turn():
    plans = plan_training(_batches([10] * 2), "pack", seed=0, epochs=3, max_steps=None, world_size=1,
                          accumulation=2)
    assert [p.epoch for p in plans] == [0, 1, 2]
