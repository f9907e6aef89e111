"""The training stage: packed rows in, a fine-tuned model (+ tokenizer, stats, report) out."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, check_output
from longalign.models import load_model, load_tokenizer
from longalign.results import StageResult, numeric
from longalign.training.attention import prepare_for_packed_training, select_attention
from longalign.training.checkpoint import checkpoint_root
from longalign.training.data import PackedData
from longalign.training.distributed import make_accelerator as _make_accelerator
from longalign.training.distributed import full_state_dict, is_fsdp2_model, zero_stage
from longalign.training.head import install_loss_head, remove_loss_head
from longalign.training.loop import run_training
from longalign.training.metrics import FlopCounter, TensorBoard, device_peak_tflops
from longalign.training.report import build_stats, write_report
from longalign.training.schedule import plan_training
from longalign.training.setup import apply_rope, resolved_batch, rope_overrides, rope_summary

log = logging.getLogger("longalign")


def make_accelerator(seed: int, config: TrainingConfig | None = None) -> Any:
    """An Accelerator for ``config.distributed`` (DDP when launched with several processes)."""
    return _make_accelerator(seed, config)


def load_training_model(model: str, gradient_checkpointing: bool = False,
                        config: TrainingConfig | None = None) -> tuple[Any, str, bool]:
    """The model ready for packed training, the attention implementation it runs and its
    config's original ``use_cache`` (restored when saving)."""
    config = config or TrainingConfig()
    attn = select_attention()
    configure = ((lambda cfg: apply_rope(cfg, config, model)) if rope_overrides(config)
                 else None)
    net = load_model(model, attn_implementation=attn, configure=configure)
    use_cache = bool(getattr(net.config, "use_cache", True))
    prepare_for_packed_training(net)
    if gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    install_loss_head(net, config.cross_entropy, config.ce_chunk_size)
    return net, attn, use_cache


def _warnings(data: PackedData, model: str, net: Any) -> list[str]:
    out = []
    packed_with = data.meta.get("model")
    if packed_with and packed_with != model:
        out.append(f"rows were packed for model {packed_with!r}, training {model!r}")
    limit = getattr(net.config, "max_position_embeddings", None)
    longest = max(mb.width for mb in data.batches)
    if limit and longest > limit:
        out.append(f"rows of {longest} tokens exceed the model's {limit} positions")
    for w in out:
        log.warning("%s", w)
    return out


def train(config: TrainingConfig, model: str, packed: str | os.PathLike,
          output: str | os.PathLike, *, overwrite: bool = False) -> StageResult:
    """Fine-tune ``model`` on the packing stage's output ``packed`` and write it to ``output``.

    ``output`` receives the model (safetensors) and tokenizer, ``stats.json``, ``summary.md``,
    ``loss.png`` and ``tensorboard/``; only the main process writes it, atomically. Launch with
    ``torchrun`` (or ``accelerate launch``) for data parallelism: the loss stays exact for any
    number of processes and any gradient accumulation. Checkpoints go to
    ``config.checkpoint_dir`` (default ``<output>.checkpoints``) every ``checkpoint_every`` steps
    and at SIGTERM, which then raises :class:`~longalign.training.checkpoint.Preempted`;
    ``config.resume`` continues from the newest one. Returns the StageResult (on every process).
    """
    started = time.perf_counter()
    data = PackedData(packed, document_masking=config.document_masking)
    out = Path(output)
    check_output(out, overwrite)
    if config.cross_entropy == "liger" and config.distributed != "ddp":
        raise UserError("cross_entropy=liger reads the whole LM head weight: use it with "
                        "distributed=ddp (or ZeRO-2 through a DeepSpeed JSON), or use chunked")
    accelerator = make_accelerator(config.seed, config)
    world = accelerator.num_processes
    batch = resolved_batch(config, data.strategy, data.meta, data.batches, world)
    accumulation = batch["gradient_accumulation_steps"]
    writer = (atomic_dir(out, overwrite=overwrite) if accelerator.is_main_process
              else contextlib.nullcontext(None))
    with writer as tmp:
        net, attn, use_cache = load_training_model(model, config.gradient_checkpointing, config)
        plans = plan_training(data.batches, data.strategy, seed=config.seed,
                              epochs=config.epochs, max_steps=config.max_steps,
                              world_size=world, accumulation=accumulation,
                              balance=config.rank_balance,
                              linear=FlopCounter(net).linear_cost)
        info = {
            "model": model, "strategy": data.strategy, "loss_mode": config.loss,
            "objective": config.objective, "document_masking": config.document_masking,
            "data_format": data.meta.get("format", "chat"),
            "world_size": world, **batch, "max_grad_norm": config.max_grad_norm,
            "rank_balance": config.rank_balance, **rope_summary(net.config),
            "chat_template": data.meta.get("chat_template_name"),
            "distributed": config.distributed, "zero_stage": zero_stage(accelerator),
            "cross_entropy": config.cross_entropy, "mixed_precision": accelerator.mixed_precision,
            "attn_implementation": attn, "micro_batches": len(data.batches), "rows": data.rows,
            "samples": data.samples, "samples_without_targets": data.samples_without_targets,
            "data_tasks": data.meta.get("data_tasks"),  # task formats of the data, for scoring
            "filler_micro_batches": sum(1 for p in plans for r in p.slots for s in r
                                        if not s.weight),
            "epochs": max(p.epoch for p in plans) + 1, "seed": config.seed,
            "learning_rate": config.learning_rate,
            "parameters": sum(int(getattr(p, "ds_numel", 0) or p.numel())
                              for p in net.parameters()),
            "warnings": _warnings(data, model, net),
            "peak_tflops": device_peak_tflops(config.peak_tflops),
        }
        run_key = {"world_size": world, "accumulation": accumulation,
                   "seed": config.seed, "steps": len(plans), "micro_batches": len(data.batches),
                   "tokens": sum(mb.tokens for mb in data.batches), "loss": config.loss}
        log.info("training %s: %d steps over %d micro-batches on %d process(es), attention %s",
                 model, len(plans), len(data.batches), world, attn)
        board = TensorBoard(_tensorboard_dir(config, tmp) if accelerator.is_main_process
                            else None)
        try:
            results, prepared = run_training(
                net, data, plans, accelerator, config, attn,
                checkpoints=checkpoint_root(config.checkpoint_dir, out), tensorboard=board,
                run_key=run_key)
        finally:
            board.close()
        samples = [s for r in results for s in r.samples]
        if world > 1:
            from accelerate.utils import gather_object

            samples = gather_object(samples)
        stats = build_stats(results, samples, info)
        stats["seconds"] = time.perf_counter() - started
        _save(accelerator, prepared, model, tmp, use_cache, config.gradient_checkpointing,
              data.meta.get("chat_template"))
        result = StageResult("training", out, stats, metrics=numeric(stats["metrics"]),
                             headline={"final_loss": stats["final_loss"]}, summary="summary.md")
        if tmp is not None:
            write_report(tmp, result)
    accelerator.wait_for_everyone()
    return result


def _tensorboard_dir(config: TrainingConfig, tmp: Path | None) -> Path | None:
    if config.tensorboard_dir:
        return Path(config.tensorboard_dir)
    return tmp / "tensorboard" if tmp is not None else None


def _save(accelerator: Any, prepared: Any, model: str, tmp: Path | None, use_cache: bool,
          gradient_checkpointing: bool, chat_template: str | None = None) -> None:
    """Gather the full weights (all ranks; ZeRO-3/FSDP shard them) and save on the main one,
    with the tokenizer carrying the chat template the rows were packed with."""
    net = accelerator.unwrap_model(prepared)
    remove_loss_head(net)
    if is_fsdp2_model(prepared):  # gathered to CPU on the main process only
        state_dict = full_state_dict(prepared)
    else:
        state_dict = accelerator.get_state_dict(prepared)
    if tmp is None:
        return
    if gradient_checkpointing:
        net.gradient_checkpointing_disable()
    net.config.use_cache = use_cache
    net.config._attn_implementation = "sdpa"  # ours is not registered where the model is loaded
    with torch.no_grad():
        net.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer = load_tokenizer(model)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(tmp)
