"""Which micro-batches each rank runs in each optimizer step, and the step's loss totals.

The plan is a pure function of the data, the config and the world size, so every rank computes
the same plan without talking to the others (and a resumed run can skip to any step).

- ``sort`` (LongAlign's sorted batching, :func:`sorted_steps`): micro-batches sorted by length,
  cut into groups of ONE MICRO-STEP ACROSS RANKS (world_size micro-batches, one per rank), the
  groups shuffled with (seed, epoch); an optimizer step takes ``accumulation`` consecutive groups
  of that order, so it mixes randomly drawn lengths while the ranks of one micro-step run similar
  lengths. In the first epoch the group holding the longest micro-batch runs first, so an
  out-of-memory shows at step 0. A group smaller than world_size (the shortest micro-batches
  left over) is the epoch's last.
- ``pack``: rows in an order shuffled with (seed, epoch); one optimizer step takes
  ``world_size * accumulation`` consecutive rows, dealt to the ranks so that their attention cost
  (:func:`row_cost`) is balanced (:func:`balanced_deal`; ``balance=False``: every world_size-th
  row, like ``DistributedSampler``).
- ``naive``: the stored order, dealt like ``DistributedSampler``.

Steps do not cross epochs, so an epoch's last step may be smaller. When the micro-batches of a
step do not divide evenly, the ranks that are short run a filler micro-batch (the step's cheapest)
with weight 0 (its loss is multiplied by 0): every rank then runs the same number of micro-batches
and steps, nothing is repeated, and the gradient stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from longalign.training.data import MicroBatch

# cost(n) = n^2 + LINEAR * n per sample: the attention term against the dense layers, in units
# of the attention work. From FLOPs per token, dense 6P against attention 6 * layers * d * n:
# P / (layers * d) is about 61,000 for Llama-3.1-8B (8.03e9 / (32 * 4096)); the stage uses the
# trained model's own ratio (metrics.FlopCounter.linear_cost).
DEFAULT_LINEAR = 61_000.0


@dataclass(frozen=True)
class Slot:
    """One micro-batch run: its position in ``PackedData.batches`` and its loss weight (1 or 0)."""

    batch: int
    weight: float = 1.0


@dataclass
class StepPlan:
    """One optimizer step for all ranks."""

    step: int  # 0-based global step
    epoch: int
    slots: list[list[Slot]]  # per rank, same length on every rank
    num_sequences: int  # LongAlign's M: sequences with targets in the whole step (all ranks)
    num_tokens: int  # target tokens in the whole step (all ranks)
    rank_cost_ratio: float = 1.0  # max over ranks / mean over ranks of the attention cost


def sorted_steps(lengths: Sequence[int], *, world_size: int, accumulation: int, seed: int = 0,
                 epoch: int = 0) -> list[list[list[int]]]:
    """LongAlign's sorted batching planned on lengths alone, one item per micro-batch.

    Items are sorted by length (longest first; equal lengths by index), cut into consecutive
    groups of ``world_size`` (one micro-step across all ranks; the last group may be smaller),
    and the full groups shuffled with a generator seeded by ``(seed, epoch)``; in epoch 0 the
    group holding the longest item is moved to the front. The smaller leftover group, if any,
    goes last. Each optimizer step takes ``accumulation`` consecutive groups; rank r runs item
    r of each of them.

    Returns, for each optimizer step, for each rank, the item indices of its micro-batches in
    the order they run. Every index appears exactly once. A rank's list may be shorter than
    another's only in the epoch's last step (the training loop runs a weight-0 filler there).
    """
    if world_size < 1 or accumulation < 1:
        raise ValueError(f"world_size and accumulation must be >= 1, got {world_size}, "
                         f"{accumulation}")
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    ranked = np.lexsort((np.arange(arr.size), -arr)).tolist()
    groups = [ranked[k:k + world_size] for k in range(0, len(ranked), world_size)]
    tail = [groups.pop()] if groups and len(groups[-1]) < world_size else []
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(groups)).tolist()
    if epoch == 0 and groups:  # group 0 holds the longest item
        perm.remove(0)
        perm.insert(0, 0)
    groups = [groups[g] for g in perm] + tail
    steps = []
    for s in range(0, len(groups), accumulation):
        chunk = groups[s:s + accumulation]
        steps.append([[g[r] for g in chunk if r < len(g)] for r in range(world_size)])
    return steps


def row_cost(seq_lens: Sequence[int], linear: float = DEFAULT_LINEAR) -> float:
    """Relative compute of one row: sum over its samples of ``n^2 + linear * n`` (per-sample
    causal attention plus the dense layers)."""
    return float(sum(n * n + linear * n for n in seq_lens))


def balanced_deal(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Deal items (positions into ``costs``) to ``world_size`` ranks, at most
    ``ceil(len / world_size)`` each, so that the largest per-rank sum is small: costliest first,
    each to the least-loaded rank that still has room (ties: the lower rank). Deterministic."""
    per_rank = math.ceil(len(costs) / world_size) if len(costs) else 0
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    loads = [0.0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        r = min((r for r in range(world_size) if len(out[r]) < per_rank),
                key=lambda r: (loads[r], r))
        out[r].append(i)
        loads[r] += costs[i]
    return out


def cost_ratio(loads: Sequence[float]) -> float:
    """max / mean of per-rank loads (1.0: perfectly balanced)."""
    mean = sum(loads) / len(loads) if loads else 0.0
    return max(loads) / mean if mean > 0 else 1.0


def epoch_order(batches: list[MicroBatch], strategy: str, seed: int, epoch: int) -> list[int]:
    """The order in which an epoch visits the micro-batches of ``pack`` (seeded shuffle) and
    ``naive`` (stored order); ``sort`` is planned by :func:`sorted_steps`."""
    if strategy == "pack":
        rng = np.random.default_rng([seed, epoch])
        return [int(i) for i in rng.permutation(len(batches))]
    return list(range(len(batches)))


def _batch_cost(mb: MicroBatch, linear: float) -> float:
    """A micro-batch's compute: its rows padded to the batch width count as full rows of that
    width, except a packed row, whose samples attend only inside themselves."""
    if len(mb.rows) == 1:
        return row_cost(mb.seq_lens[0], linear)
    return len(mb.rows) * row_cost([mb.width], linear)


def _step_plan(batches: list[MicroBatch], ranks: list[list[int]], *, step: int, epoch: int,
               linear: float) -> StepPlan:
    real = [i for r in ranks for i in r]
    cheapest = min(real, key=lambda i: (_batch_cost(batches[i], linear), i))
    per_rank = max(len(r) for r in ranks)
    slots = [[Slot(i) for i in r] + [Slot(cheapest, 0.0)] * (per_rank - len(r)) for r in ranks]
    loads = [sum(_batch_cost(batches[s.batch], linear) for s in r) for r in slots]
    return StepPlan(step=step, epoch=epoch, slots=slots,
                    num_sequences=sum(batches[i].num_sequences for i in real),
                    num_tokens=sum(batches[i].num_targets for i in real),
                    rank_cost_ratio=cost_ratio(loads))


def epoch_steps(batches: list[MicroBatch], strategy: str, *, seed: int, epoch: int,
                world_size: int, accumulation: int, balance: bool = True,
                linear: float = DEFAULT_LINEAR) -> list[list[list[int]]]:
    """Per optimizer step of one epoch, per rank, the micro-batches it runs (positions into
    ``batches``; fillers not included)."""
    if strategy == "sort":
        return sorted_steps([mb.width for mb in batches], world_size=world_size,
                            accumulation=accumulation, seed=seed, epoch=epoch)
    order = epoch_order(batches, strategy, seed, epoch)
    size = world_size * accumulation
    steps = []
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        if strategy == "pack" and balance and world_size > 1:
            dealt = balanced_deal([_batch_cost(batches[i], linear) for i in chunk], world_size)
            steps.append([[chunk[k] for k in r] for r in dealt])
        else:
            steps.append([chunk[r::world_size] for r in range(world_size)])
    return steps


def steps_per_epoch(batches: list[MicroBatch], strategy: str, world_size: int,
                    accumulation: int) -> int:
    if strategy == "sort":
        return math.ceil(math.ceil(len(batches) / world_size) / accumulation)
    return math.ceil(len(batches) / (world_size * accumulation))


def plan_training(batches: list[MicroBatch], strategy: str, *, seed: int, epochs: int,
                  max_steps: int | None, world_size: int, accumulation: int,
                  balance: bool = True, linear: float = DEFAULT_LINEAR) -> list[StepPlan]:
    """All optimizer steps: ``epochs`` epochs, or exactly ``max_steps`` steps when it is set
    (cycling through further epochs if needed, as transformers' Trainer does)."""
    per_epoch = steps_per_epoch(batches, strategy, world_size, accumulation)
    total = max_steps if max_steps is not None else epochs * per_epoch
    plans: list[StepPlan] = []
    epoch = 0
    while len(plans) < total and per_epoch:
        for ranks in epoch_steps(batches, strategy, seed=seed, epoch=epoch,
                                 world_size=world_size, accumulation=accumulation,
                                 balance=balance, linear=linear):
            plans.append(_step_plan(batches, ranks, step=len(plans), epoch=epoch, linear=linear))
        epoch += 1
    return plans[:total]
