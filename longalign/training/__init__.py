"""The training stage: fine-tune a causal LM on packed rows with LongAlign's loss weighting.

Modules: ``attention`` (per-sample SDPA for packed rows and input guards), ``loss`` (token-mean
and LongAlign-weighted loss, exact across accumulation and ranks), ``head`` (chunked or Liger
LM head + loss), ``data`` (memory-mapped packed rows), ``schedule`` (which micro-batches each
rank runs per step), ``distributed`` (DDP / DeepSpeed / FSDP2 accelerator), ``loop`` (the
optimisation loop), ``checkpoint`` (checkpoints, SIGTERM, resume), ``metrics`` (FLOPs, MFU,
memory, TensorBoard), ``report`` (stats, summary, plot) and ``stage`` (:func:`train`).
"""

import os

import torch

if not torch.cuda.is_available():
    # DeepSpeed (imported by accelerate) would otherwise print a warning on stdout that it picked
    # the CPU; naming the CPU up front is the same choice without the noise.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from longalign.training.loss import packed_loss  # noqa: E402
from longalign.training.stage import train  # noqa: E402

__all__ = ["train", "packed_loss"]
