"""Batch order per strategy and the split of optimizer steps over ranks."""

from collections import Counter

from longalign.training.data import MicroBatch
from longalign.training.schedule import epoch_order, plan_training


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


def test_sort_puts_the_longest_batch_first_and_shuffles_the_rest():
    batches = _batches([5, 9, 30, 7, 12, 3, 8, 20])
    order = epoch_order(batches, "sort", 0, 0)
    assert order[0] == 2 and sorted(order) == list(range(8))
    assert order != epoch_order(batches, "sort", 1, 0)  # seeded shuffle of the groups
    assert order == epoch_order(batches, "sort", 0, 0)
    assert epoch_order(batches, "naive", 0, 0) == list(range(8))


def test_sorted_batching_gives_every_rank_its_share_of_each_length_group():
    widths = [50, 3, 41, 12, 30, 7, 22, 19, 60, 5, 33]
    batches = _batches(widths)
    for seed in range(3):
        plans = plan_training(batches, "sort", seed=seed, epochs=2, max_steps=None,
                              world_size=2, accumulation=2)
        assert len(plans) == 2 * 3  # both epochs, 3 steps each, the same on every rank
        ranked = sorted(range(len(widths)), key=lambda i: -widths[i])
        groups = [set(ranked[k:k + 4]) for k in range(0, len(ranked), 4)]
        for plan in plans:
            real = {s.batch for r in plan.slots for s in r if s.weight}
            assert real in groups  # one length group per step, split over both ranks
            assert all(any(s.weight for s in r) for r in plan.slots)
        assert {s.batch for r in plans[2].slots for s in r if s.weight} == groups[-1]
        assert 8 in {s.batch for r in plans[0].slots for s in r}  # longest first, each epoch
        assert 8 in {s.batch for r in plans[3].slots for s in r}


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
