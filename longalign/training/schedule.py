"""Which micro-batches each rank runs in each optimizer step, and the step's loss totals.

The plan is a pure function of the data, the config and the world size, so every rank computes
the same plan without talking to the others (and a resumed run can skip to any step).

- Order per epoch: ``pack`` shuffles the batches with a generator seeded by (seed, epoch);
  ``sort`` sorts the micro-batches by length, cuts them into groups of one optimizer step
  (world_size x accumulation micro-batches; a smaller rest of the shortest batches is the
  epoch's last step), shuffles the other groups with (seed, epoch) and runs
  the group holding the longest batch first, so an out-of-memory shows at step 0 and every
  rank gets its share of each group (similar lengths on all ranks in a step); ``naive`` keeps
  the stored order.
- One optimizer step takes ``world_size * accumulation`` consecutive micro-batches of that order;
  rank r takes every world_size-th of them starting at r (like ``DistributedSampler``). Steps do
  not cross epochs, so an epoch's last step may be smaller. When the micro-batches of a step do
  not divide evenly, the ranks that are short run a filler micro-batch (the step's cheapest) with
  weight 0 (its loss is multiplied by 0): every rank then runs the same number of micro-batches
  and steps, nothing is repeated, and the gradient stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from longalign.training.data import MicroBatch


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


def epoch_order(batches: list[MicroBatch], strategy: str, seed: int, epoch: int,
                group: int = 1) -> list[int]:
    """The order in which an epoch visits the micro-batches (positions into ``batches``);
    ``group`` is the number of micro-batches of one optimizer step (world size x accumulation)."""
    order = list(range(len(batches)))
    if strategy == "pack":
        rng = np.random.default_rng([seed, epoch])
        return [int(i) for i in rng.permutation(len(batches))]
    if strategy == "sort" and order:
        # LongAlign's sorted batching as a distributed sampler: micro-batches sorted by length,
        # cut into groups of one optimizer step, the groups shuffled; each rank then takes its
        # share of every group, so all ranks run similar lengths in a step.
        # Groups are cut from the long end; a smaller leftover group (the shortest batches)
        # stays last so that every other group is exactly one step.
        ranked = sorted(order, key=lambda i: (-batches[i].width, -batches[i].tokens, i))
        groups = [ranked[k:k + group] for k in range(0, len(ranked), group)]
        tail = [groups.pop()] if len(groups[-1]) < group else []
        rng = np.random.default_rng([seed, epoch])
        groups = [groups[int(g)] for g in rng.permutation(len(groups))] + tail
        longest = max(range(len(groups)),
                      key=lambda g: max((_cost(batches[i]), batches[i].tokens) for i in groups[g]))
        groups.insert(0, groups.pop(longest))  # out-of-memory shows at step 0
        return [i for g in groups for i in g]
    return order


def split_step(chunk: list[int], world_size: int, filler: int | None = None) -> list[list[Slot]]:
    """Deal a step's micro-batches over ranks; pad short ranks with a weight-0 ``filler``
    (default: the step's first micro-batch)."""
    per_rank = math.ceil(len(chunk) / world_size)
    filler = chunk[0] if filler is None else filler
    slots = []
    for rank in range(world_size):
        mine = [Slot(i) for i in chunk[rank::world_size]]
        mine += [Slot(filler, 0.0)] * (per_rank - len(mine))
        slots.append(mine)
    return slots


def plan_epoch(batches: list[MicroBatch], order: list[int], *, epoch: int, first_step: int,
               world_size: int, accumulation: int) -> list[StepPlan]:
    """The optimizer steps of one epoch."""
    size = world_size * accumulation
    plans = []
    for k, start in enumerate(range(0, len(order), size)):
        chunk = order[start:start + size]
        cheapest = min(chunk, key=lambda i: _cost(batches[i]))
        plans.append(StepPlan(
            step=first_step + k,
            epoch=epoch,
            slots=split_step(chunk, world_size, filler=cheapest),
            num_sequences=sum(batches[i].num_sequences for i in chunk),
            num_tokens=sum(batches[i].num_targets for i in chunk),
        ))
    return plans


def _cost(mb: MicroBatch) -> int:
    return mb.width * len(mb.rows)


def steps_per_epoch(num_batches: int, world_size: int, accumulation: int) -> int:
    return math.ceil(num_batches / (world_size * accumulation))


def plan_training(batches: list[MicroBatch], strategy: str, *, seed: int, epochs: int,
                  max_steps: int | None, world_size: int, accumulation: int) -> list[StepPlan]:
    """All optimizer steps: ``epochs`` epochs, or exactly ``max_steps`` steps when it is set
    (cycling through further epochs if needed, as transformers' Trainer does)."""
    per_epoch = steps_per_epoch(len(batches), world_size, accumulation)
    total = max_steps if max_steps is not None else epochs * per_epoch
    plans: list[StepPlan] = []
    epoch = 0
    while len(plans) < total and per_epoch:
        order = epoch_order(batches, strategy, seed, epoch, world_size * accumulation)
        plans += plan_epoch(batches, order, epoch=epoch, first_step=len(plans),
                            world_size=world_size, accumulation=accumulation)
        epoch += 1
    return plans[:total]
