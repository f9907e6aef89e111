"""The learning-rate schedule: linear warm-up, then a cosine decay to a floor.

LongAlign trains with the usual cosine schedule (the floor is 0). ProLong decays to a tenth of the
peak instead (``min_lr_ratio`` 0.1 in its training scripts, for continued pre-training and SFT
alike): after the warm-up the multiplier is ``r + (1 - r) * c``, where ``c`` falls from 1 to 0 along
half a cosine over the remaining steps. The warm-up is not raised to the floor.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(step: int, warmup: int, total: int, min_lr_ratio: float = 0.0) -> float:
    """The factor applied to the peak learning rate before optimizer step ``step`` (0-based)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))  # the floor holds past the end
    cosine = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


class CosineSchedule:
    """``lr_multiplier`` with its settings bound (a plain object: LambdaLR saves its state)."""

    def __init__(self, warmup: int, total: int, min_lr_ratio: float = 0.0):
        self.warmup, self.total, self.min_lr_ratio = warmup, total, min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_multiplier(step, self.warmup, self.total, self.min_lr_ratio)


def cosine_schedule(optimizer: Optimizer, warmup: int, total: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    return LambdaLR(optimizer, CosineSchedule(warmup, total, min_lr_ratio))
