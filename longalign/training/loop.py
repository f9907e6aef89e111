"""The optimisation loop: exact loss totals per optimizer step, explicit gradient accumulation.

accelerate's Accelerator wraps the model (DDP when several processes run, or DeepSpeed) and the
optimizer; with ``distributed: fsdp2`` the model is sharded with ``fully_shard`` instead
(distributed.py) and accelerate does not wrap it. The step plan (schedule.py) decides what each
rank runs. Gradient accumulation is done here, not by accelerate, because the loss must not be
divided by the number of micro-batches: every micro-batch loss already carries the step's
totals (loss.py explains why this is exact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from longalign.config import TrainingConfig
from longalign.progress import track
from longalign.training.attention import ATTN_NAME
from longalign.training.data import Batch, PackedData
from longalign.training.distributed import is_deepspeed, is_fsdp2_model, shard_fsdp2
from longalign.training.head import find_loss_head
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
    flops: float = 0.0  # training FLOPs of the step, all ranks (metrics.FlopCounter)
    cpu_seconds: float = 0.0  # this process's CPU time for the step (steadier on a busy host)
    grad_norm: float | None = None  # global L2 norm of the step's gradient before clipping
    rank_cost_ratio: float = 1.0  # the plan's max/mean attention cost over ranks


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
    boolean mask), which skips most of the vocabulary projection for long prompts. When a
    :class:`~longalign.training.head.LossHead` is installed it computes the loss itself, in
    chunks (or with Liger), so no (positions x vocabulary) logits tensor is ever whole.
    """
    device = next(model.parameters()).device
    t = loss_targets(batch.labels.to(device), batch.position_ids.to(device), mode=mode,
                     num_sequences=num_sequences, num_tokens=num_tokens)
    kwargs: dict[str, Any] = {}
    if attn_implementation == ATTN_NAME:
        kwargs["longalign_seq_lens"] = batch.seq_lens
    inputs = {"input_ids": batch.input_ids.to(device),
              "position_ids": batch.position_ids.to(device)}
    head = find_loss_head(model)
    if head is not None and _accepts_logits_to_keep(model):
        head.arm(t.targets, t.weights)
        loss = model(**inputs, logits_to_keep=t.keep, use_cache=False, **kwargs).logits
        ce = head.last_ce
    elif _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=t.keep, use_cache=False, **kwargs).logits
        loss, ce = weighted_cross_entropy(logits, t.targets, t.weights)
    else:
        logits = model(**inputs, use_cache=False, **kwargs).logits[t.keep]
        loss, ce = weighted_cross_entropy(logits, t.targets, t.weights)
    return loss, per_sequence_loss(ce, t)


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip the accumulated gradient to global L2 norm ``max_norm`` (0: no clipping) and return
    the norm before clipping.

    Call after the step's last backward, when DDP has averaged the gradients (every rank holds
    the same full gradient) or FSDP2 has reduce-scattered them (each rank holds a shard as a
    DTensor; the norm's DTensor is all-reduced by ``full_tensor``): every rank gets the same
    norm and scales by the same factor, so one process and several clip alike. DeepSpeed clips
    inside its own step (``gradient_clipping`` in its config); see :func:`deepspeed_grad_norm`.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.get_total_norm([p.grad for p in params], 2.0)
    full = getattr(norm, "full_tensor", None)
    if full is not None:  # a DTensor: the shards' partial norms, reduced over ranks
        norm = full()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def deepspeed_grad_norm(engine: Any) -> float | None:
    """The pre-clip global gradient norm DeepSpeed computed in its last step."""
    value = getattr(engine, "get_global_grad_norm", lambda: None)()
    return float(value) if value is not None else None


def _sync_context(accelerator: Any, model: Any, last: bool) -> Any:
    """Gradients are synchronised on a step's last micro-batch only (DDP, DeepSpeed).

    FSDP2 reduce-scatters after every micro-batch instead and sums the sharded gradients: the
    same sum (reduce-scatter is linear) without holding the whole model's unsharded gradients
    between micro-batches, which would cost what sharding saves."""
    if is_fsdp2_model(model):
        return contextlib.nullcontext()
    if is_deepspeed(accelerator):  # accelerate passes this to DeepSpeed as the step boundary
        accelerator.gradient_state._set_sync_gradients(last)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def run_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             data: PackedData, plan: StepPlan, accelerator: Any, config: TrainingConfig,
             attn_implementation: str | None, vocab_size: int | None = None,
             flop_counter: Any = None) -> StepResult:
    """Run one optimizer step of ``plan`` on this rank (accumulate, sync once, update)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    world, rank = accelerator.num_processes, accelerator.process_index
    slots = plan.slots[rank]
    lr = scheduler.get_last_lr()[0]
    local_loss = torch.zeros((), dtype=torch.float64)
    tokens = 0
    samples: list[tuple[int, float]] = []
    step_lengths: list[int] = []
    for i, slot in enumerate(slots):
        mb = data.batches[slot.batch]
        batch = data.load(mb, vocab_size)
        last = i == len(slots) - 1
        with _sync_context(accelerator, model, last):
            loss, seq_losses = micro_batch_loss(
                model, batch, mode=config.loss, num_sequences=plan.num_sequences,
                num_tokens=plan.num_tokens, attn_implementation=attn_implementation)
            # x world: DDP and FSDP average gradients over ranks; x weight: fillers add nothing.
            accelerator.backward(loss * (world * slot.weight))
        if slot.weight:
            local_loss += loss.detach().double().cpu()
            tokens += mb.tokens
            lengths = [n for row in mb.seq_lens for n in row]
            samples += [(n, v) for n, v in zip(lengths, seq_losses) if v is not None]
            step_lengths += lengths
    if is_deepspeed(accelerator):  # DeepSpeed stepped (and clipped) in the last backward
        optimizer.step()
        grad_norm = deepspeed_grad_norm(model)
    else:
        grad_norm = clip_gradients(model, config.max_grad_norm)
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    flops = flop_counter.step_flops(step_lengths) if flop_counter is not None else 0.0
    totals = torch.tensor([float(local_loss), float(tokens), flops], dtype=torch.float64)
    if world > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
    return StepResult(plan.step, plan.epoch, float(totals[0]), lr, int(totals[1]),
                      time.perf_counter() - start, samples, float(totals[2]),
                      time.process_time() - cpu_start, grad_norm, plan.rank_cost_ratio)


def _step_scalars(result: StepResult, samples: list[tuple[int, float]], world: int,
                  peak_tflops: float | None) -> dict[str, float | None]:
    from longalign.training.metrics import loss_by_length, peak_memory_gb

    seconds = max(result.seconds, 1e-9)
    tflops = result.flops / seconds / world / 1e12  # per device
    scalars: dict[str, float | None] = {
        "loss/overall": result.loss, "lr": result.lr,
        "throughput/real_tokens_per_second": result.tokens / seconds,
        "throughput/tflops_per_device": tflops,
        "throughput/mfu": tflops / peak_tflops if peak_tflops else None,
        "memory/peak_gb": peak_memory_gb(),
        "grad_norm": result.grad_norm,
        "balance/rank_cost_max_over_mean": result.rank_cost_ratio,
    }
    for bucket, v in loss_by_length(samples).items():
        scalars[f"loss/length_{bucket}"] = v["mean_loss"]
    return scalars


def _result_from_json(r: dict[str, Any]) -> StepResult:
    return StepResult(**{**r, "samples": [tuple(s) for s in r["samples"]]})


def run_training(model: torch.nn.Module, data: PackedData, plans: list[StepPlan],
                 accelerator: Any, config: TrainingConfig, attn_implementation: str | None,
                 *, checkpoints: Path | None = None, tensorboard: Any = None,
                 run_key: dict[str, Any] | None = None,
                 on_step: Callable[[StepResult], None] | None = None
                 ) -> tuple[list[StepResult], Any]:
    """Prepare model and optimizer with ``accelerator``, run every planned step; returns the
    results and the prepared model.

    With ``checkpoints`` set: resume from its newest checkpoint when ``config.resume``, write one
    every ``config.checkpoint_every`` steps, and one at SIGTERM before raising
    :class:`~longalign.training.checkpoint.Preempted`. ``run_key`` identifies the plan (world
    size, accumulation, data); a checkpoint of another plan is refused.
    """
    from longalign.training.checkpoint import (Preempted, StopFlag, list_checkpoints,
                                               load_checkpoint, save_checkpoint)
    from longalign.training.lr import cosine_schedule
    from longalign.training.metrics import FlopCounter, device_peak_tflops

    flop_counter = FlopCounter(accelerator.unwrap_model(model))
    peak = device_peak_tflops(config.peak_tflops)
    fsdp2 = config.distributed == "fsdp2"
    if fsdp2:  # shard first: the optimizer holds the sharded parameters
        model = shard_fsdp2(model, accelerator, config)
    optimizer = build_optimizer(model, config)
    warmup = round(config.warmup_ratio * len(plans))
    scheduler = cosine_schedule(optimizer, warmup, len(plans), config.min_lr_ratio)
    # The scheduler is not prepared (accelerate would step it once per process) but registered,
    # so that save_state/load_state include it.
    accelerator.register_for_checkpointing(scheduler)
    if not fsdp2:  # FSDP2: model and optimizer stay unwrapped (checkpoint.py saves them)
        model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    vocab = getattr(getattr(accelerator.unwrap_model(model), "config", None), "vocab_size", None)
    world = accelerator.num_processes
    run_key = run_key or {}
    results: list[StepResult] = []
    sharded = (model, optimizer) if fsdp2 else None
    if checkpoints is not None and config.resume:
        found = list_checkpoints(checkpoints)
        if found:
            progress = load_checkpoint(accelerator, found[-1], run_key, sharded)
            results = [_result_from_json(r) for r in progress["results"]]
        else:
            log.info("no checkpoint in %s: starting from step 0", checkpoints)

    def save(step: int) -> Path:
        assert checkpoints is not None
        progress = {"step": step, "run": run_key,
                    "results": [dataclasses.asdict(r) for r in results]}
        return save_checkpoint(accelerator, checkpoints, step, progress, config.checkpoints_kept,
                               sharded)

    with StopFlag() as stop:
        for plan in track(plans[len(results):], "training steps"):
            result = run_step(model, optimizer, scheduler, data, plan, accelerator, config,
                              attn_implementation, vocab, flop_counter)
            samples = result.samples
            if world > 1:
                from accelerate.utils import gather_object

                samples = gather_object(samples)
            scalars = _step_scalars(result, samples, world, peak)
            log.info("step %d/%d epoch %d loss %.4f grad norm %s lr %.2e %d tokens %.0f tokens/s",
                     result.step + 1, len(plans), result.epoch, result.loss,
                     "?" if result.grad_norm is None else f"{result.grad_norm:.4g}", result.lr,
                     result.tokens, scalars["throughput/real_tokens_per_second"])
            if tensorboard is not None:
                tensorboard.log(result.step + 1, scalars)
            results.append(result)
            if on_step is not None:
                on_step(result)
            done = len(results)
            if checkpoints is not None and stop.agreed(accelerator):
                raise Preempted(save(done), done)
            every = config.checkpoint_every
            if checkpoints is not None and every and done % every == 0 and done < len(plans):
                save(done)
    return results, model
