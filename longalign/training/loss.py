"""Causal-LM loss over packed rows, token-averaged or weighted per sequence (LongAlign Eq. 4).

Inputs follow transformers: ``labels[t]`` is the target of position ``t`` itself (-100: no loss) and
the shift happens here, so position ``t`` predicts ``labels[t + 1]``. Samples are told apart by
``position_ids``: a position that does not continue its predecessor (in practice: 0) starts a new
sequence. A prediction across a sample boundary is never scored.

Exactness across gradient accumulation and data parallelism
-----------------------------------------------------------
One optimizer step sees micro-batches b = 1..A on each of W ranks. LongAlign's objective is
``L = (1/M) * sum_i L_i / N_i`` over the M sequences (with N_i > 0 targets) of the whole step, and
the token-mean is ``L = sum_t CE_t / T`` over its T target tokens. Both are sums of per-token terms
with weights that depend only on step totals, so the training loop

1. computes ``num_sequences`` (M) and ``num_tokens`` (T) over ALL micro-batches of the step on ALL
   ranks before the step starts (the same numbers an ``all_reduce(SUM)`` of per-rank counts gives);
2. calls :func:`packed_loss` per micro-batch with those totals and simply SUMS the micro-batch
   losses (backward on each, no division by A);
3. multiplies each rank's loss by W, because DDP (and FSDP/ZeRO) AVERAGE gradients over ranks:
   ``(1/W) * sum_r W * grad(L_r) = grad(sum_r L_r) = grad(L)``.

Per sequence N_i is counted inside the micro-batch; a sample is never split across micro-batches,
so that equals its count in the whole step. With the defaults (``None``) the totals are those of
the given batch alone, which is what a single-batch step needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longalign.formats import IGNORE

MODES = ("longalign", "token")


@dataclass
class LossTargets:
    """Shifted targets of a batch and their loss weights, flattened over the kept positions.

    ``keep`` is a (batch, length) bool mask of the positions that carry a target; ``targets``,
    ``weights`` and ``seq_index`` hold one entry per kept position (row-major order).
    """

    keep: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    seq_index: torch.Tensor
    seq_tokens: torch.Tensor  # N_i per sequence of the batch (0 for sequences without targets)
    num_sequences: int  # sequences with N_i > 0 in this batch
    num_tokens: int  # target tokens in this batch


def sequence_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """(batch, length) bool: True where a new sequence starts (every row starts one)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return starts


def loss_targets(
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    mode: str,
    num_sequences: int | None = None,
    num_tokens: int | None = None,
) -> LossTargets:
    """Shift labels within each row and weight every target token (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown loss mode {mode!r}; choose one of {', '.join(MODES)}")
    if labels.ndim == 1:
        labels = labels[None]
    if position_ids.ndim == 1:
        position_ids = position_ids[None]
    position_ids = position_ids.to(labels.device).expand_as(labels)
    starts = sequence_starts(position_ids)
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    shifted[:, :-1][starts[:, 1:]] = IGNORE  # never predict the first token of the next sample
    keep = shifted != IGNORE
    seq_id = torch.cumsum(starts.flatten().long(), 0).view_as(labels) - 1
    seq_index = seq_id[keep]
    n_seq_total = int(seq_id[-1, -1]) + 1 if labels.numel() else 0
    seq_tokens = torch.bincount(seq_index, minlength=n_seq_total)
    batch_sequences = int((seq_tokens > 0).sum())
    batch_tokens = int(seq_index.numel())
    if mode == "token":
        total = num_tokens if num_tokens is not None else batch_tokens
        weights = torch.full((batch_tokens,), 1.0 / max(total, 1), dtype=torch.float64,
                             device=labels.device)
    else:
        m = num_sequences if num_sequences is not None else batch_sequences
        weights = 1.0 / (seq_tokens[seq_index].double() * max(m, 1))
    return LossTargets(keep, shifted[keep], weights, seq_index, seq_tokens, batch_sequences,
                       batch_tokens)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.LongTensor,
                           weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_k weights[k] * CE(logits[k], targets[k])`` and the per-token CE (detached).

    ``logits`` is (K, vocab) for the K kept positions; half-precision logits are upcast to fp32.
    """
    if targets.numel() == 0:
        return logits.sum() * 0.0, logits.new_zeros(0)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (ce * weights.to(ce.dtype)).sum(), ce.detach()


def packed_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    mode: str,
    num_sequences: int | None = None,
    num_tokens: int | None = None,
) -> torch.Tensor:
    """Causal-LM loss of a (possibly packed) batch.

    ``logits`` is (batch, length, vocab); ``labels`` and ``position_ids`` are (batch, length).

    - ``mode="token"``: ``sum_t CE_t / num_tokens`` (default: target tokens in this batch);
    - ``mode="longalign"``: ``sum_t CE_t / (N_i * M)`` where N_i is the number of targets of the
      token's sequence and M is ``num_sequences`` (default: sequences with targets in this batch),
      i.e. the mean over sequences of each sequence's mean token loss (LongAlign Eq. 4).

    For gradient accumulation and data parallelism pass the totals of the whole optimizer step
    over all micro-batches and ranks, sum the micro-batch losses and multiply by the world size
    (DDP averages gradients); the result is then exact for any split (module docstring).
    """
    t = loss_targets(labels, position_ids, mode=mode, num_sequences=num_sequences,
                     num_tokens=num_tokens)
    if logits.ndim == 2:
        logits = logits[None]
    loss, _ = weighted_cross_entropy(logits[t.keep], t.targets, t.weights)
    return loss


def per_sequence_loss(ce: torch.Tensor, t: LossTargets) -> list[float | None]:
    """Mean token loss of every sequence of the batch in row-major order (None: no targets)."""
    sums = torch.zeros(t.seq_tokens.numel(), dtype=torch.float64, device=ce.device)
    sums.index_add_(0, t.seq_index, ce.double())
    return [float(s) / n if n else None for n, s in zip(t.seq_tokens.tolist(), sums.tolist())]
