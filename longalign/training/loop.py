"""The optimisation loop: exact loss totals per optimizer step, explicit gradient accumulation.

accelerate's Accelerator wraps the model (DDP when several processes run) and the optimizer;
the step plan (schedule.py) decides what each rank runs. Gradient accumulation is done here, not
by accelerate, because the loss must not be divided by the number of micro-batches: every
micro-batch loss already carries the step's totals (loss.py explains why this is exact).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from longalign.config import TrainingConfig
from longalign.progress import track
from longalign.training.attention import ATTN_NAME
from longalign.training.data import Batch, PackedData
from longalign.training.loss import loss_targets, per_sequence_loss, weighted_cross_entropy
from longalign.training.schedule import StepPlan

log = logging.getLogger("longalign")


@dataclass
class StepResult:
    """What one optimizer step did, summed over all ranks."""

    step: int
    epoch: int
    loss: float
    lr: float
    tokens: int  # real (non-padding) tokens of the step, filler micro-batches excluded
    seconds: float
    samples: list[tuple[int, float]] = field(default_factory=list)  # this rank: (length, loss)


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """torch AdamW (fused kernel when available); weight decay on matrices only (not on norms
    and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = {"lr": config.learning_rate, "betas": (config.adam_beta1, config.adam_beta2)}
    try:  # the fused kernel was 10x faster than foreach for SmolLM2 on 2 CPU cores
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # e.g. parameters on a device without a fused kernel
        return torch.optim.AdamW(groups, **kwargs)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = getattr(model, "module", model)
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def micro_batch_loss(model: torch.nn.Module, batch: Batch, *, mode: str, num_sequences: int,
                     num_tokens: int, attn_implementation: str | None,
                     ) -> tuple[torch.Tensor, list[float | None]]:
    """Forward one micro-batch and return its weighted loss and each sequence's mean loss.

    Only the positions that carry a target go through the LM head (``logits_to_keep`` with a
    boolean mask), which skips most of the vocabulary projection for long prompts.
    """
    device = next(model.parameters()).device
    t = loss_targets(batch.labels.to(device), batch.position_ids.to(device), mode=mode,
                     num_sequences=num_sequences, num_tokens=num_tokens)
    kwargs: dict[str, Any] = {}
    if attn_implementation == ATTN_NAME:
        kwargs["longalign_seq_lens"] = batch.seq_lens
    inputs = {"input_ids": batch.input_ids.to(device),
              "position_ids": batch.position_ids.to(device)}
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=t.keep, use_cache=False, **kwargs).logits
    else:
        logits = model(**inputs, use_cache=False, **kwargs).logits[t.keep]
    loss, ce = weighted_cross_entropy(logits, t.targets, t.weights)
    return loss, per_sequence_loss(ce, t)


def run_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             data: PackedData, plan: StepPlan, accelerator: Any, config: TrainingConfig,
             attn_implementation: str | None, vocab_size: int | None = None) -> StepResult:
    """Run one optimizer step of ``plan`` on this rank (accumulate, sync once, update)."""
    start = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    slots = plan.slots[rank]
    lr = scheduler.get_last_lr()[0]
    local_loss = torch.zeros((), dtype=torch.float64)
    tokens = 0
    samples: list[tuple[int, float]] = []
    for i, slot in enumerate(slots):
        mb = data.batches[slot.batch]
        batch = data.load(mb, vocab_size)
        last = i == len(slots) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync:
            loss, seq_losses = micro_batch_loss(
                model, batch, mode=config.loss, num_sequences=plan.num_sequences,
                num_tokens=plan.num_tokens, attn_implementation=attn_implementation)
            # x world: DDP averages gradients over ranks; x weight: fillers contribute nothing.
            accelerator.backward(loss * (world * slot.weight))
        if slot.weight:
            local_loss += loss.detach().double().cpu()
            tokens += mb.tokens
            lengths = [n for row in mb.seq_lens for n in row]
            samples += [(n, v) for n, v in zip(lengths, seq_losses) if v is not None]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    totals = torch.tensor([float(local_loss), float(tokens)], dtype=torch.float64)
    if world > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
    return StepResult(plan.step, plan.epoch, float(totals[0]), lr, int(totals[1]),
                      time.perf_counter() - start, samples)


def run_training(model: torch.nn.Module, data: PackedData, plans: list[StepPlan],
                 accelerator: Any, config: TrainingConfig, attn_implementation: str | None,
                 on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Prepare model and optimizer with ``accelerator`` and run every planned step."""
    from transformers import get_cosine_schedule_with_warmup

    optimizer = build_optimizer(model, config)
    warmup = round(config.warmup_ratio * len(plans))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, len(plans))
    # The scheduler is not prepared: accelerate would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    vocab = getattr(getattr(accelerator.unwrap_model(model), "config", None), "vocab_size", None)
    results = []
    for plan in track(plans, "training steps"):
        result = run_step(model, optimizer, scheduler, data, plan, accelerator, config,
                          attn_implementation, vocab)
        log.info("step %d/%d epoch %d loss %.4f lr %.2e %d tokens %.0f tokens/s",
                 result.step + 1, len(plans), result.epoch, result.loss, result.lr,
                 result.tokens, result.tokens / max(result.seconds, 1e-9))
        results.append(result)
        if on_step is not None:
            on_step(result)
    return results
