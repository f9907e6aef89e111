"""Per-step throughput, MFU estimate, memory, loss per sample length, and TensorBoard event files.

FLOPs of one training step (forward + backward = 3x forward), counted on real tokens only:

- dense layers: ``6 * P * tokens`` with P the parameter count without the input embedding
  (a lookup, no multiply-adds);
- attention scores and values: per layer and sample of length n, forward ``2 * 2 * n^2 * d / 2``
  (QK^T and AV, causal half), so ``6 * layers * d * sum(n_i^2)`` for the step, d = heads x
  head_dim. Packed samples attend only inside themselves, so the sum runs over samples.

MFU = achieved FLOP/s per device / the device's peak (``peak_tflops``; known for common GPUs in
bf16, none on CPU, where MFU is not reported).
"""

from __future__ import annotations

import logging
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("longalign")

# dense bf16 peak TFLOP/s per device (vendor data sheets, no sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
               "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "V100": 125.0}


class FlopCounter:
    """Training FLOPs for a step from its sample lengths."""

    def __init__(self, model: Any):
        cfg = model.config
        embed = model.get_input_embeddings()
        embed_params = _numel(embed.weight) if embed is not None else 0
        total = sum(_numel(p) for p in model.parameters())  # tied weights counted once
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        # with tied embeddings the shared matrix is also the LM head, which does multiply
        self.dense_params = total if tied else total - embed_params
        heads = getattr(cfg, "num_attention_heads", 0) or 0
        head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // max(heads, 1))
        self.attn_width = heads * head_dim
        self.layers = getattr(cfg, "num_hidden_layers", 0) or 0

    @property
    def linear_cost(self) -> float:
        """The dense layers' work per token in units of the attention's per token-pair work
        (``P_dense / (layers * d)``): a sample of n tokens costs about ``n^2 + this * n``."""
        width = self.layers * self.attn_width
        return self.dense_params / width if width else 0.0

    def step_flops(self, sample_lengths: list[int]) -> float:
        tokens = sum(sample_lengths)
        squares = sum(n * n for n in sample_lengths)
        return 6.0 * self.dense_params * tokens + 6.0 * self.layers * self.attn_width * squares


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitioned: full size


def device_peak_tflops(configured: float | None) -> float | None:
    if configured:
        return configured
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def peak_memory_gb() -> float:
    """Peak accelerator memory (CUDA) or the process's peak resident memory (CPU), in GB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


class TensorBoard:
    """Scalars per optimizer step, main process only; a no-op elsewhere."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            directory.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(directory))
            self.directory = directory

    def log(self, step: int, scalars: dict[str, float | None]) -> None:
        if self.writer is None:
            return
        for key, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def length_bucket(n: int) -> str:
    """Power-of-two bucket of a sample length, e.g. 1500 -> "1025-2048"."""
    hi = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    lo = hi // 2 + 1 if hi > 1 else 1
    return f"{lo}-{hi}"


def loss_by_length(samples: list[tuple[int, float]]) -> dict[str, dict[str, float]]:
    """Mean per-sample loss (as seen during training) per length bucket, short to long."""
    groups: dict[str, list[float]] = {}
    for n, loss in sorted(samples):
        groups.setdefault(length_bucket(n), []).append(loss)
    return {k: {"samples": len(v), "mean_loss": sum(v) / len(v)} for k, v in groups.items()}
