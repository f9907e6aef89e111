"""Two data-parallel processes (gloo) make the same update as one process on the same batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from training_helpers import make_samples, one_thread, write_packed  # noqa: F401 (fixture)

from longalign.config import TrainingConfig
from longalign.models import resolve_model

MODEL = "embedded:tiny"


def _sgd_run(packed, accumulation, mode, max_grad_norm=1.0, steps=None):
    """Every planned step of one epoch with SGD(lr=1): the weight change is the summed gradient,
    so any error in the loss scaling over ranks shows up (AdamW's first step would hide it)."""
    from longalign.training.data import PackedData
    from longalign.training.loop import run_step
    from longalign.training.schedule import plan_training
    from longalign.training.stage import load_training_model, make_accelerator

    accelerator = make_accelerator(0)
    net, attn, _ = load_training_model(MODEL)
    data = PackedData(packed)
    plans = plan_training(data.batches, data.strategy, seed=0, epochs=1, max_steps=None,
                          world_size=accelerator.num_processes, accumulation=accumulation)
    model = accelerator.prepare(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = TrainingConfig(loss=mode, max_grad_norm=max_grad_norm)
    before = [p.detach().clone() for p in model.parameters()]
    results = [run_step(model, optimizer, scheduler, data, plan, accelerator, config, attn)
               for plan in plans[:steps]]
    losses = [r.loss for r in results]
    if steps is not None:  # the norm of the update: with SGD(lr=1), the clipped gradient's
        moved = sum(float((p.detach() - b).double().pow(2).sum())
                    for p, b in zip(model.parameters(), before)) ** 0.5
        return moved, [r.grad_norm for r in results]
    state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return state, losses


def _worker(rank, world, port, packed, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from longalign.training import train

    results = {mode: _sgd_run(packed, 1, mode) for mode in ("longalign", "token")}
    results["clip"] = {limit: _sgd_run(packed, 1, "longalign", limit, steps=1)
                       for limit in (1e-3, 0.0)}
    if rank == 0:
        torch.save(results, os.path.join(out, "sgd.pt"))
    stats = train(TrainingConfig(epochs=1, learning_rate=1e-2, warmup_ratio=0.0), MODEL, packed,
                  os.path.join(out, "model"))
    torch.save(stats.stats, os.path.join(out, f"stats-{rank}.pt"))
    from longalign.training.distributed import shutdown

    shutdown()  # as `longalign train` ends: the group is not left to the interpreter's exit


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.usefixtures("one_thread")
def test_two_processes_equal_one_process(tmp_path, monkeypatch):
    from longalign.training import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # 5 micro-batches of uneven lengths: 2 ranks x 1 = 3 steps, the last with a filler on rank 1
    packed = write_packed(tmp_path / "packed", make_samples(14, 500, seed=4, max_len=30),
                          max_len=64)
    out = tmp_path / "dist"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(packed), str(out)), nprocs=2, join=True)

    dist = torch.load(out / "sgd.pt")
    for mode in ("longalign", "token"):
        ref_state, ref_losses = _sgd_run(packed, 2, mode)
        state, losses = dist[mode]
        assert losses == pytest.approx(ref_losses, rel=1e-6)
        base = load_file(os.path.join(resolve_model(MODEL), "model.safetensors"))
        moved = max(float((ref_state[k] - base[k]).abs().max()) for k in base)
        assert moved > 1e-3  # the step did something
        assert max(float((state[k] - ref_state[k]).abs().max()) for k in ref_state) < 1e-6

    # a step whose gradient is far above max_grad_norm is clipped to it on 1 and 2 processes
    for limit, (moved, norms) in dist["clip"].items():
        ref_moved, ref_norms = _sgd_run(packed, 2, "longalign", limit, steps=1)
        assert norms[0] == pytest.approx(ref_norms[0], rel=1e-6) and norms[0] > 1.0
        assert moved == pytest.approx(ref_moved, rel=1e-5)
        assert moved == pytest.approx(limit if limit else norms[0], rel=1e-4)  # norm + 1e-6

    s0, s1 = torch.load(out / "stats-0.pt"), torch.load(out / "stats-1.pt")
    assert s0["world_size"] == 2 and s0["steps"] == s1["steps"] == 3
    assert s0["grad_norm"] == s1["grad_norm"] and all(n > 0 for n in s0["grad_norm"])
    assert s0["loss"] == s1["loss"] and s0["filler_micro_batches"] == 1
    ref = train(TrainingConfig(epochs=1, learning_rate=1e-2, warmup_ratio=0.0,
                               gradient_accumulation_steps=2), MODEL, packed, tmp_path / "one")
    assert s0["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert s0["tokens"] == ref["tokens"]
    w2 = load_file(out / "model" / "model.safetensors")
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    assert max(float((w2[k] - w1[k]).abs().max()) for k in w1) < 1e-4


def test_shutdown_destroys_the_group_once_and_is_harmless_without_one():
    import torch.distributed as dist

    from longalign.training.distributed import shutdown

    assert not dist.is_initialized()
    shutdown()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        assert dist.is_initialized()
        shutdown()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
