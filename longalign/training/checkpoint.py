"""Checkpoints every N steps and at preemption (SIGTERM), and ``resume`` from the newest one.

A checkpoint is accelerate's ``save_state`` (model, optimizer, registered LR scheduler, the RNG
states of every process; DeepSpeed writes its own sharded layout) plus ``progress-<rank>.json``.
With FSDP2 accelerate does not hold the model and optimizer: they go to ``fsdp2/`` as a
torch.distributed.checkpoint (each rank writes its own shards, loading reshards); the rest is
the same. ``progress-<rank>.json`` holds the next step to run and the per-step results so far.
The data position is the step index: the step plan is a pure function of the data, seed and
world size (schedule.py), so a resumed run runs exactly the steps that were left. A checkpoint
is written under a temporary name and renamed when complete (the directory must be shared by all
nodes); only ``kept`` are kept.

SIGTERM (what Kubernetes sends before killing a pod, and what torchrun forwards to its workers)
only sets a flag: the current optimizer step finishes, all ranks agree to stop (an all-reduce of
the flag, so ranks signalled a step apart still stop together), a checkpoint is written and
:class:`Preempted` is raised.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from longalign.errors import UserError

log = logging.getLogger("longalign")

PREFIX = "step-"
SHARDED = "fsdp2"  # the torch.distributed.checkpoint of an FSDP2 model + optimizer
EXIT_CODE = 143  # 128 + SIGTERM


class Preempted(Exception):
    """Training stopped at a step boundary after SIGTERM; a checkpoint was written."""

    def __init__(self, path: Path, step: int):
        super().__init__(f"preempted: checkpoint of step {step} written to {path}")
        self.path, self.step = path, step


class StopFlag:
    """Set by SIGTERM while installed (main thread only; elsewhere it is never set)."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.set:
            log.warning("SIGTERM: finishing this step, then writing a checkpoint")
        self.set = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self, accelerator: Any) -> bool:
        """True on every rank when any rank was signalled."""
        if accelerator.num_processes == 1:
            return self.set
        flag = torch.tensor([1.0 if self.set else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def checkpoint_root(configured: str | None, output: str | os.PathLike) -> Path:
    if configured:
        return Path(configured)
    out = Path(output)
    return out.parent / f"{out.name}.checkpoints"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and (p / "progress-0.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(accelerator: Any, root: Path, step: int, progress: dict[str, Any],
                    kept: int, sharded: tuple[Any, Any] | None = None) -> Path:
    """Write the checkpoint taken after ``step`` optimizer steps (all ranks must call this).
    ``sharded``: the FSDP2 model and its optimizer, which accelerate does not hold."""
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if sharded is not None:
        _save_sharded(tmp / SHARDED, *sharded)
    (tmp / f"progress-{accelerator.process_index}.json").write_text(json.dumps(progress))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-kept]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint of step %d written to %s", step, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path, expect: dict[str, Any],
                    sharded: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Restore model/optimizer/scheduler/RNG from ``path`` and return this rank's progress
    (``sharded``: the FSDP2 model and optimizer, restored from the checkpoint's ``fsdp2/``)."""
    progress_file = path / f"progress-{accelerator.process_index}.json"
    if not progress_file.is_file():
        raise UserError(f"checkpoint {path} has no progress for rank {accelerator.process_index}"
                        " (written with fewer processes?)")
    progress = json.loads(progress_file.read_text())
    for key, value in expect.items():
        if progress.get("run", {}).get(key) != value:
            raise UserError(f"checkpoint {path} was written with {key}="
                            f"{progress.get('run', {}).get(key)!r}, this run has {value!r}")
    if sharded is not None:
        if not (path / SHARDED).is_dir():
            raise UserError(f"checkpoint {path} has no {SHARDED}/ (not written with "
                            "distributed=fsdp2)")
        _load_sharded(path / SHARDED, *sharded)
    accelerator.load_state(str(path))
    log.info("resumed from %s at step %d", path, progress["step"])
    return progress


def _save_sharded(where: Path, model: Any, optimizer: Any) -> None:
    """Every rank writes its shards of the model and optimizer state (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(where))


def _load_sharded(where: Path, model: Any, optimizer: Any) -> None:
    """Read the shards this rank owns into the model and optimizer (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)  # the layout to fill
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(where))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
