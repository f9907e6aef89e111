"""cpu_bf16: bf16 only where the CPU computes it natively, and a bf16 step close to the fp32 one."""

import logging

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longalign import precision
from longalign.config import GenerationConfig, ScoringConfig, TrainingConfig


def tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=128))


@pytest.mark.parametrize("features, expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, "amx_bf16"),
    ({"amx_bf16": False, "avx512_bf16": True}, "avx512_bf16"),
    ({"avx2": True, "avx512_f": True}, None),
    ({}, None),
])
def test_native_bf16_is_read_from_the_cpu_features(cpu_has, features, expected):
    cpu_has(**features)
    assert precision.native_cpu_bf16() == expected


def test_asked_for_on_a_cpu_without_it_stays_fp32_and_says_so(cpu_has, caplog, monkeypatch):
    monkeypatch.delenv(precision.OFF_ENV, raising=False)
    cpu_has(avx2=True)
    with caplog.at_level(logging.INFO, logger="longalign"):
        assert precision.use_cpu_bf16(True, "training") is None
    assert "training: fp32" in caplog.text and "amx_bf16" in caplog.text


def test_not_asked_for_or_turned_off_by_the_environment(cpu_has, monkeypatch):
    cpu_has(amx_bf16=True)
    monkeypatch.delenv(precision.OFF_ENV, raising=False)
    assert precision.use_cpu_bf16(False, "x") is None
    assert precision.use_cpu_bf16(True, "x") == "amx_bf16"
    monkeypatch.setenv(precision.OFF_ENV, "0")
    assert precision.use_cpu_bf16(True, "x") is None


@pytest.mark.parametrize("native, dtype, tag", [(True, torch.bfloat16, "bf16"), (False, None, "")])
def test_without_a_gpu_local_inference_runs_on_the_cpu(cpu_has, monkeypatch, native, dtype, tag):
    cpu_has(amx_bf16=native)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    placement = precision.inference_placement(True, "scoring model")
    assert (placement.device, placement.dtype, placement.tag) == ("cpu", dtype, tag)
    assert precision.inference_placement(False, "x").dtype is None


# A GPU cannot run here: torch's CUDA queries are replaced, which checks the choice made from them
@pytest.mark.parametrize("bf16_ok, dtype, tag", [(True, torch.bfloat16, "bf16|cuda"),
                                                 (False, torch.float16, "fp16|cuda")])
def test_with_a_gpu_local_inference_runs_on_it_in_half_precision(cpu_has, monkeypatch, caplog,
                                                                  bf16_ok, dtype, tag):
    cpu_has(amx_bf16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with caplog.at_level(logging.INFO, logger="longalign"):
        placement = precision.inference_placement(False, "teacher")  # cpu_bf16 does not matter
    assert (placement.device, placement.dtype, placement.tag, placement.gpus) == ("cuda", dtype, tag, 1)
    assert f"teacher: on the GPU (NVIDIA A100-SXM4-80GB) in {tag.split('|')[0]}" in caplog.text


def test_on_several_gpus_a_model_is_spread_over_them(cpu_has, monkeypatch, caplog):
    """A pod with several GPUs (a model too big for one) loads it with accelerate's
    device_map="auto"; with one GPU it is moved there whole. A GPU cannot run here: torch's CUDA
    queries and transformers' loader are replaced, which checks what is asked of them."""
    import transformers

    from longalign.models import load_model

    cpu_has()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with caplog.at_level(logging.INFO, logger="longalign"):
        placement = precision.inference_placement(False, "scoring model")
    assert placement.gpus == 4 and "on 4 GPUs, layers spread," in caplog.text

    asked = []

    class Loaded:
        def to(self, device):
            asked.append(("to", device))
            return self

    def from_pretrained(where, **kwargs):
        asked.append(("load", kwargs.get("device_map"), kwargs["dtype"]))
        return Loaded()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_model("embedded:tiny", dtype=placement.dtype, device=placement.device, gpus=placement.gpus)
    assert asked == [("load", "auto", torch.bfloat16)]  # placed by accelerate, not moved after
    asked.clear()
    load_model("embedded:tiny", dtype=placement.dtype, device="cuda", gpus=1)
    assert asked == [("load", None, torch.bfloat16), ("to", "cuda")]


def test_a_gpu_pod_with_a_cpu_only_torch_says_which_image_to_use(cpu_has, monkeypatch, caplog):
    cpu_has()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)  # the data image's CPU-only torch
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-5f3c")
    with caplog.at_level(logging.WARNING, logger="longalign"):
        assert precision.inference_placement(True, "scoring model").device == "cpu"
    assert "GPU-5f3c" in caplog.text and "longalign-cuda" in caplog.text
    caplog.clear()
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")  # the NVIDIA runtime's "no GPU"
    with caplog.at_level(logging.WARNING, logger="longalign"):
        precision.inference_placement(True, "scoring model")
    assert "longalign-cuda" not in caplog.text
    # the CUDA image on a node without GPUs (its base image sets NVIDIA_VISIBLE_DEVICES=all)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    with caplog.at_level(logging.WARNING, logger="longalign"):
        assert precision.inference_placement(True, "scoring model").device == "cpu"
    assert "longalign-cuda" not in caplog.text


def test_every_stage_with_a_local_model_has_the_option_off_by_default():
    assert not TrainingConfig().cpu_bf16
    assert not GenerationConfig().cpu_bf16
    assert not ScoringConfig().cpu_bf16


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state; each precision needs its own."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def _one_step_loss(cpu_bf16: bool) -> tuple[str, float, torch.Tensor]:
    from accelerate.state import AcceleratorState

    from longalign.training.distributed import make_accelerator

    AcceleratorState._reset_state(True)
    model = tiny_llama(3)
    accelerator = make_accelerator(0, TrainingConfig(cpu_bf16=cpu_bf16))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(0, 97, (2, 48), generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, labels=ids)
    accelerator.backward(out.loss)
    optimizer.step()
    weight = accelerator.unwrap_model(model).get_input_embeddings().weight
    return accelerator.mixed_precision, float(out.loss.detach()), weight.detach().clone()


def test_a_bf16_step_keeps_fp32_weights_and_tracks_the_fp32_step(cpu_has, monkeypatch, fresh_accelerate):
    """Where the CPU has native bf16, training autocasts the forward (the matrix products run in
    bf16) and keeps fp32 master weights; its loss and update stay close to the fp32 step's."""
    monkeypatch.delenv(precision.OFF_ENV, raising=False)
    cpu_has(amx_bf16=True)
    mode32, loss32, w32 = _one_step_loss(False)
    mode16, loss16, w16 = _one_step_loss(True)
    assert (mode32, mode16) == ("no", "bf16")
    assert w16.dtype == torch.float32
    assert loss16 != loss32  # the forward really ran in bf16 ...
    assert loss16 == pytest.approx(loss32, rel=2e-2)  # ... and stays close to fp32
    start = tiny_llama(3).get_input_embeddings().weight.detach()
    update32, update16 = w32 - start, w16 - start
    cosine = torch.nn.functional.cosine_similarity(update32.flatten(), update16.flatten(), dim=0)
    assert cosine > 0.99


def test_bf16_needs_ddp(cpu_has, caplog, monkeypatch, fresh_accelerate):
    monkeypatch.delenv(precision.OFF_ENV, raising=False)
    cpu_has(amx_bf16=True)
    from longalign.training.distributed import make_accelerator

    with caplog.at_level(logging.INFO, logger="longalign"):
        accelerator = make_accelerator(0, TrainingConfig(cpu_bf16=True, distributed="fsdp2"))
    assert accelerator.mixed_precision == "no"
    assert "ddp only" in caplog.text
