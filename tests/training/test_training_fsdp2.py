"""FSDP2 (torch fully_shard) on 2 CPU processes (gloo) trains exactly like 1 DDP process.

Three checks in one pair of processes (start-up is the expensive part):
- SGD(lr=1) through the loop's step with the model sharded: the weight change is the summed
  gradient, so a wrong world-size scaling of the loss would show (AdamW's update hides a
  constant factor); both loss modes, with gradient accumulation 2 and a filler micro-batch;
- the full stage (AdamW, gradient checkpointing, checkpoints, full safetensors at the end)
  against 1 DDP process on the same global batches;
- SIGTERM on rank 0 after step 3, then ``resume``: the same losses and weights as no kill.
"""

import json
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from training_helpers import make_samples, one_thread, write_packed  # noqa: F401 (fixture)

from longalign.config import TrainingConfig
from longalign.models import resolve_model

MODEL = "embedded:tiny"
CONFIG = dict(epochs=2, learning_rate=1e-2, warmup_ratio=0.0, checkpoint_every=2,
              gradient_checkpointing=True)
KILL_AT = 3


def _sgd_run(packed, accumulation, mode, fsdp2):
    from longalign.training.data import PackedData
    from longalign.training.distributed import full_state_dict, shard_fsdp2
    from longalign.training.loop import run_step
    from longalign.training.schedule import plan_training
    from longalign.training.stage import load_training_model, make_accelerator

    config = TrainingConfig(loss=mode, distributed="fsdp2" if fsdp2 else "ddp")
    accelerator = make_accelerator(0, config)
    net, attn, _ = load_training_model(MODEL)
    data = PackedData(packed)
    plans = plan_training(data.batches, data.strategy, seed=0, epochs=1, max_steps=None,
                          world_size=accelerator.num_processes, accumulation=accumulation)
    model = shard_fsdp2(net, accelerator, config) if fsdp2 else accelerator.prepare(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    losses = [run_step(model, optimizer, scheduler, data, plan, accelerator, config, attn).loss
              for plan in plans]
    if fsdp2:
        state = full_state_dict(model)  # rank 0 only
    else:
        state = {k: v.detach().clone()
                 for k, v in accelerator.unwrap_model(model).state_dict().items()}
    fillers = sum(1 for p in plans for r in p.slots for s in r if not s.weight)
    return state, losses, fillers


def _worker(rank, world, port, packed, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from longalign.training import loop, train
    from longalign.training.checkpoint import Preempted

    sgd = {mode: _sgd_run(packed, 2, mode, fsdp2=True) for mode in ("longalign", "token")}
    if rank == 0:
        torch.save(sgd, os.path.join(out, "sgd.pt"))

    config = TrainingConfig(**CONFIG, distributed="fsdp2")
    stats = train(config, MODEL, packed, os.path.join(out, "model"))
    keep = ("loss", "lr", "steps", "world_size", "distributed", "tokens")
    report = {"full": {k: stats[k] for k in keep}}

    real_step = loop.run_step

    def run_step(*args, **kwargs):  # only rank 0 is signalled: the ranks must agree to stop
        result = real_step(*args, **kwargs)
        if rank == 0 and result.step + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    loop.run_step = run_step
    try:
        train(config, MODEL, packed, os.path.join(out, "resumed"))
    except Preempted as stop:
        report["preempted_at"] = stop.step
    loop.run_step = real_step
    resumed = train(config.model_copy(update={"resume": True}), MODEL, packed,
                    os.path.join(out, "resumed"))
    report["resumed"] = {k: resumed[k] for k in keep}
    with open(os.path.join(out, f"report-{rank}.json"), "w") as f:
        json.dump(report, f)
    from longalign.training.distributed import shutdown

    shutdown()  # as `longalign train` ends: the group is not left to the interpreter's exit


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a, b):
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.usefixtures("one_thread")
def test_fsdp2_on_two_processes_equals_one_ddp_process(tmp_path, monkeypatch):
    from longalign.training import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # 5 micro-batches of uneven lengths: 3 steps per epoch on 2 ranks, the last with a filler
    packed = write_packed(tmp_path / "packed", make_samples(14, 500, seed=4, max_len=30),
                          max_len=64)
    out = tmp_path / "fsdp2"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(packed), str(out)), nprocs=2, join=True)

    # exact gradients: SGD(lr=1) on 2 sharded ranks x 2 micro-batches == 1 process x 4
    base = load_file(os.path.join(resolve_model(MODEL), "model.safetensors"))
    sgd = torch.load(out / "sgd.pt")
    for mode in ("longalign", "token"):
        state, losses, fillers = sgd[mode]
        ref_state, ref_losses, _ = _sgd_run(packed, 4, mode, fsdp2=False)
        assert fillers >= 1  # the uneven step is covered
        assert losses == pytest.approx(ref_losses, rel=1e-6)
        moved = float((ref_state["model.embed_tokens.weight"] - base["model.embed_tokens.weight"])
                      .abs().max())
        assert moved > 1e-3  # the step did something
        assert _max_diff(state, ref_state) < 1e-6

    r0 = json.loads((out / "report-0.json").read_text())
    r1 = json.loads((out / "report-1.json").read_text())
    full = r0["full"]
    assert full["distributed"] == "fsdp2" and full["world_size"] == 2 and full["steps"] == 6
    assert r1["full"]["loss"] == full["loss"] and full["loss"][-1] < full["loss"][0]

    # the whole stage against 1 DDP process on the same global batches (2 ranks x 1 = 1 x 2)
    ref = train(TrainingConfig(**dict(CONFIG, gradient_checkpointing=False,
                                      gradient_accumulation_steps=2)),
                MODEL, packed, tmp_path / "one")
    assert full["steps"] == ref["steps"] and full["tokens"] == ref["tokens"]
    assert full["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    w_fsdp = load_file(out / "model" / "model.safetensors")
    w_one = load_file(tmp_path / "one" / "model.safetensors")
    assert _max_diff(w_fsdp, base) > 1e-3  # it trained
    assert _max_diff(w_fsdp, w_one) < 1e-5
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["use_cache"] is True

    # killed at step 3 (rank 0 only signalled), resumed: as if never killed
    assert r0["preempted_at"] == r1["preempted_at"] == KILL_AT
    assert (out / "resumed.checkpoints" / f"step-{KILL_AT:08d}" / "fsdp2").is_dir()
    resumed = r0["resumed"]
    assert resumed["steps"] == 6 and resumed["lr"] == full["lr"]
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-6, abs=0)
    w_resumed = load_file(out / "resumed" / "model.safetensors")
    assert _max_diff(w_resumed, w_fsdp) < 1e-6
