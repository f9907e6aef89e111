"""The LM head fused with the weighted loss, so logits of all positions never exist at once.

:class:`LossHead` replaces the model's output embedding (``lm_head``) during training. The model
is called with ``logits_to_keep`` set to the boolean mask of target positions, so the head sees
only those hidden states (K, hidden). Before the call the loop arms the head with the K targets
and their loss weights; the head then returns the weighted cross-entropy SUM (a 0-d tensor) in
place of the logits, and keeps each token's cross-entropy (detached) for the per-sequence stats.

- ``chunked``: the K positions go through the inner head ``chunk_size`` at a time; each chunk's
  logits (chunk x vocab) are freed after its loss is taken and recomputed in backward
  (activation checkpointing), so peak memory holds one chunk of logits instead of K. One chunk
  is not checkpointed: nothing would be saved. The sum equals the unchunked loss exactly up to
  float summation order (tested).
- ``liger``: Liger's fused linear cross-entropy (Triton, GPU only; liger-kernel >= 0.8.2, whose
  per-token gradients are right with ``reduction="none"``); imported only when selected. It
  reads the head weight directly, so it needs unsharded parameters (DDP or ZeRO-1/2).

Because the inner head is called as a module (chunked mode), ZeRO-3 and FSDP gather its
parameters through their usual hooks. Models that post-process logits (soft-capping, a logit
scale) are refused: the head never returns logits for them to post-process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from longalign.errors import UserError


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (ce * weights.to(ce.dtype)).sum(), ce.detach()


def chunked_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                          weights: torch.Tensor, chunk_size: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_k weights[k] * CE(head(hidden[k]), targets[k])`` and the per-token CE, computing
    at most ``chunk_size`` rows of logits at a time (in forward and in backward)."""
    if targets.numel() == 0:
        return hidden.sum() * 0.0, hidden.new_zeros(0)
    if hidden.shape[0] <= chunk_size:
        return _chunk_loss(head, hidden, targets, weights)
    total = None
    ces = []
    for h, t, w in zip(hidden.split(chunk_size), targets.split(chunk_size),
                       weights.split(chunk_size)):
        loss, ce = checkpoint(_chunk_loss, head, h, t, w, use_reentrant=False)
        total = loss if total is None else total + loss
        ces.append(ce)
    return total, torch.cat(ces)


def liger_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                        weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sum through Liger's fused linear cross-entropy (GPU)."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        raise UserError("cross_entropy=liger needs liger-kernel>=0.8.2 "
                        "(pip install 'longalign[gpu]') and a GPU") from None
    if targets.numel() == 0:
        return hidden.sum() * 0.0, hidden.new_zeros(0, dtype=torch.float32)
    fn = LigerFusedLinearCrossEntropyLoss(reduction="none")
    ce = fn(head.weight, hidden, targets, getattr(head, "bias", None)).float()
    return (ce * weights.to(ce.dtype)).sum(), ce.detach()


class LossHead(torch.nn.Module):
    """Wraps the model's LM head; returns the armed weighted loss instead of logits."""

    def __init__(self, inner: torch.nn.Module, mode: str = "chunked", chunk_size: int = 2048):
        super().__init__()
        self.inner = inner
        self.mode = mode
        self.chunk_size = chunk_size
        self._armed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_ce: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:  # tied-embedding code and Liger read the head's weight
        return self.inner.weight

    def arm(self, targets: torch.Tensor, weights: torch.Tensor) -> None:
        """Targets and loss weights of the next forward's kept positions (row-major)."""
        self._armed = (targets, weights)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._armed is None:  # not armed: an ordinary head (e.g. generation)
            return self.inner(hidden)
        targets, weights = self._armed
        self._armed = None
        hidden = hidden.reshape(-1, hidden.shape[-1])
        if hidden.shape[0] != targets.numel():
            raise ValueError(f"loss head got {hidden.shape[0]} positions for "
                             f"{targets.numel()} targets")
        if self.mode == "liger":
            loss, ce = liger_cross_entropy(self.inner, hidden, targets, weights)
        else:
            loss, ce = chunked_cross_entropy(self.inner, hidden, targets, weights,
                                             self.chunk_size)
        self.last_ce = ce
        return loss


def _post_processes_logits(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    capped = getattr(cfg, "final_logit_softcapping", None) is not None
    return capped or hasattr(model, "logit_scale") or getattr(cfg, "logit_scale", None) is not None


def install_loss_head(model: torch.nn.Module, mode: str, chunk_size: int) -> LossHead:
    """Put a :class:`LossHead` in place of ``model``'s output embedding; returns it."""
    if _post_processes_logits(model):
        raise UserError(f"{type(model).__name__} post-processes its logits (soft-capping or a "
                        "logit scale), which the fused loss head does not implement")
    inner = model.get_output_embeddings()
    if isinstance(inner, LossHead):
        return inner
    if not isinstance(inner, torch.nn.Linear):
        raise UserError(f"{type(model).__name__}'s output embedding is not a Linear layer")
    head = LossHead(inner, mode, chunk_size)
    model.set_output_embeddings(head)
    return head


def remove_loss_head(model: torch.nn.Module) -> None:
    """Put the original LM head back (before saving)."""
    head = model.get_output_embeddings()
    if isinstance(head, LossHead):
        model.set_output_embeddings(head.inner)


def find_loss_head(model: Any) -> LossHead | None:
    inner = getattr(model, "module", model)
    getter = getattr(inner, "get_output_embeddings", None)
    head = getter() if getter else None
    return head if isinstance(head, LossHead) else None
