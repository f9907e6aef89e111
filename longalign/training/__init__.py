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


def _return_freed_activations() -> None:
    """Serve large allocations (>= 64 KiB) from their own mappings, returned to the system when
    freed. glibc otherwise raises its mmap threshold as tensors are freed and then keeps each step's
    activations in a fragmented heap: SmolLM2 on 4k-token rows peaked at 4.4 GB with activation
    checkpointing, 1.8 GB into the same step with this (bench/demo_bench.py, README)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_return_freed_activations()

from longalign.training.loss import packed_loss  # noqa: E402
from longalign.training.stage import train  # noqa: E402

__all__ = ["train", "packed_loss"]
