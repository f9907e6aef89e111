"""FLOP counting, and the per-step scalars written to TensorBoard and KFP metrics."""

import pytest
import torch
from training_helpers import make_samples, one_thread, tiny_llama, write_packed  # noqa: F401

from longalign.config import TrainingConfig
from longalign.training import train
from longalign.training.metrics import FlopCounter, device_peak_tflops

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_count_dense_params_and_per_sample_attention():
    model = tiny_llama()  # untied: the input embedding is a lookup and not counted
    counter = FlopCounter(model)
    params = sum(p.numel() for p in model.parameters())
    assert counter.dense_params == params - 97 * 32
    lengths = [5, 11]
    expect = 6 * counter.dense_params * 16 + 6 * 2 * 32 * (25 + 121)
    assert counter.step_flops(lengths) == expect
    # packing the same tokens as one sample would count more attention work
    assert counter.step_flops([16]) > counter.step_flops(lengths)


def test_peak_tflops_is_configured_or_unknown_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_peak_tflops(None) is None and device_peak_tflops(100.0) == 100.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert device_peak_tflops(None) == 989.0


def test_training_writes_tensorboard_scalars_and_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    packed = write_packed(tmp_path / "packed", make_samples(8, 500, seed=2, max_len=40),
                          max_len=48)
    stats = train(TrainingConfig(epochs=1, learning_rate=1e-2, warmup_ratio=0.0,
                                 peak_tflops=1.0), "embedded:tiny", packed, tmp_path / "out")
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/overall", "throughput/real_tokens_per_second", "throughput/mfu",
            "memory/peak_gb", "lr"} <= tags
    assert any(t.startswith("loss/length_") for t in tags)
    losses = [e.value for e in events.Scalars("loss/overall")]
    assert losses == pytest.approx(stats["loss"], rel=1e-6)
    m = stats["metrics"]
    assert m["mfu"] == pytest.approx(m["tflops_per_device"] / 1.0) and m["mfu"] > 0
    assert m["peak_memory_gb"] > 0.05 and any(k.startswith("loss_length_") for k in m)
    assert sum(stats["step_flops"]) > 6 * stats["parameters"] * stats["tokens"] * 0.5
