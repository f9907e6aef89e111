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
from longalign.io import atomic_dir
from longalign.models import load_model, load_tokenizer
from longalign.training.attention import prepare_for_packed_training, select_attention
from longalign.training.data import PackedData
from longalign.training.loop import run_training
from longalign.training.report import build_stats, write_report
from longalign.training.schedule import plan_training

log = logging.getLogger("longalign")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise UserError(f"output {out} already exists and is not empty (use --overwrite)")


def make_accelerator(seed: int) -> Any:
    """An Accelerator (DDP when launched with several processes) and seeded RNGs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # Without cpu=True accelerate only detects a multi-process launch when a GPU is present;
    # every torchrun rank would then silently train alone on all the data.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(f"launched {launched} processes but accelerate sees only one")
    set_seed(seed)
    return accelerator


def load_training_model(model: str, gradient_checkpointing: bool = False
                        ) -> tuple[Any, str, bool]:
    """The model ready for packed training, the attention implementation it runs and its
    config's original ``use_cache`` (restored when saving)."""
    attn = select_attention()
    net = load_model(model, attn_implementation=attn)
    use_cache = bool(getattr(net.config, "use_cache", True))
    prepare_for_packed_training(net)
    if gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
          output: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Fine-tune ``model`` on the packing stage's output ``packed`` and write it to ``output``.

    ``output`` receives the model (safetensors) and tokenizer, ``stats.json``, ``summary.md`` and
    ``loss.png``; only the main process writes it, atomically. Launch with ``accelerate launch`` or
    ``torchrun`` for data parallelism: the loss stays exact for any number of processes and any
    gradient accumulation. Returns the stats (also on non-main processes).
    """
    started = time.perf_counter()
    data = PackedData(packed)
    out = Path(output)
    _check_output(out, overwrite)
    accelerator = make_accelerator(config.seed)
    world = accelerator.num_processes
    plans = plan_training(data.batches, data.strategy, seed=config.seed, epochs=config.epochs,
                          max_steps=config.max_steps, world_size=world,
                          accumulation=config.gradient_accumulation_steps)
    writer = (atomic_dir(out, overwrite=overwrite) if accelerator.is_main_process
              else contextlib.nullcontext(None))
    with writer as tmp:
        net, attn, use_cache = load_training_model(model, config.gradient_checkpointing)
        info = {
            "model": model, "strategy": data.strategy, "loss_mode": config.loss,
            "world_size": world, "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "attn_implementation": attn, "micro_batches": len(data.batches), "rows": data.rows,
            "samples": data.samples, "samples_without_targets": data.samples_without_targets,
            "filler_micro_batches": sum(1 for p in plans for r in p.slots for s in r
                                        if not s.weight),
            "epochs": max(p.epoch for p in plans) + 1, "seed": config.seed,
            "learning_rate": config.learning_rate,
            "parameters": sum(p.numel() for p in net.parameters()),
            "warnings": _warnings(data, model, net),
        }
        log.info("training %s: %d steps over %d micro-batches on %d process(es), attention %s",
                 model, len(plans), len(data.batches), world, attn)
        results = run_training(net, data, plans, accelerator, config, attn)
        samples = [s for r in results for s in r.samples]
        if world > 1:
            from accelerate.utils import gather_object

            samples = gather_object(samples)
        stats = build_stats(results, samples, info)
        stats["seconds"] = time.perf_counter() - started
        if tmp is not None:
            _save(accelerator.unwrap_model(net), model, tmp, use_cache,
                  config.gradient_checkpointing)
            write_report(tmp, stats)
    accelerator.wait_for_everyone()
    return stats


def _save(net: Any, model: str, tmp: Path, use_cache: bool, gradient_checkpointing: bool) -> None:
    if gradient_checkpointing:
        net.gradient_checkpointing_disable()
    net.config.use_cache = use_cache
    net.config._attn_implementation = "sdpa"  # ours is not registered where the model is loaded
    with torch.no_grad():
        net.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(model).save_pretrained(tmp)
