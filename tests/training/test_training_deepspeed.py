"""DeepSpeed ZeRO-3 (through accelerate) on 2 CPU processes trains, and matches 1 DDP process.

The loop passes a torch AdamW (zero_allow_untested_optimizer) so DeepSpeed compiles nothing.
"""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from training_helpers import make_samples, one_thread, write_packed  # noqa: F401 (fixture)

from longalign.config import TrainingConfig
from longalign.models import resolve_model

# Part of the default suite: two processes, DeepSpeed start-up and, on first use, a build of its
# CPU shm comm op into $TORCH_EXTENSIONS_DIR (about 55 s on an idle 2-core machine with an empty
# extension cache, about 20 s once built).

MODEL = "embedded:tiny"
CONFIG = dict(epochs=2, learning_rate=1e-2, warmup_ratio=0.0, gradient_accumulation_steps=1,
              distributed="deepspeed", deepspeed_config="zero3")


def _worker(rank, world, port, packed, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from longalign.training import train

    from longalign.training.distributed import shutdown

    stats = train(TrainingConfig(**CONFIG), MODEL, packed, os.path.join(out, "model"))
    with open(os.path.join(out, f"stats-{rank}.json"), "w") as f:
        json.dump({k: stats[k] for k in ("loss", "steps", "zero_stage", "world_size",
                                         "grad_norm")}, f)
    shutdown()  # as `longalign train` ends: the group is not left to the interpreter's exit


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.usefixtures("one_thread")
def test_zero3_on_two_processes_trains_like_one_ddp_process(tmp_path, monkeypatch):
    from longalign.training import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    packed = write_packed(tmp_path / "packed", make_samples(10, 500, seed=4, max_len=30),
                          max_len=64)
    out = tmp_path / "ds"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(packed), str(out)), nprocs=2, join=True)
    s0 = json.loads((out / "stats-0.json").read_text())
    s1 = json.loads((out / "stats-1.json").read_text())
    assert s0["zero_stage"] == 3 and s0["world_size"] == 2
    assert s0["loss"] == s1["loss"] and s0["loss"][-1] < s0["loss"][0]
    # DeepSpeed clips in its own step (gradient_clipping) and reports the pre-clip norm
    assert s0["grad_norm"] == s1["grad_norm"] and all(n > 0 for n in s0["grad_norm"])

    # the same global batches on one process with DDP (accumulation 2 = 2 ranks x 1)
    ref = train(TrainingConfig(**dict(CONFIG, distributed="ddp", gradient_accumulation_steps=2)),
                MODEL, packed, tmp_path / "one")
    assert s0["steps"] == ref["steps"]
    assert s0["loss"] == pytest.approx(ref["loss"], rel=1e-4)
    w_ds = load_file(out / "model" / "model.safetensors")
    w_one = load_file(tmp_path / "one" / "model.safetensors")
    base = load_file(os.path.join(resolve_model(MODEL), "model.safetensors"))
    assert set(w_ds) == set(w_one)
    assert max(float((w_ds[k] - base[k]).abs().max()) for k in base) > 1e-3  # it trained
    assert max(float((w_ds[k] - w_one[k]).abs().max()) for k in w_one) < 1e-4
