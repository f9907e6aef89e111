"""The shipped config files match the built-in presets and load as valid run configs."""

import json
from pathlib import Path

import pytest
import yaml

from longalign.config import load_run_config
from longalign.errors import UserError
from longalign.training.distributed import DEEPSPEED_PRESETS, deepspeed_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "training"


@pytest.mark.parametrize("name", sorted(DEEPSPEED_PRESETS))
def test_deepspeed_json_files_equal_the_presets(name):
    path = CONFIGS / f"ds_{name.replace('-', '_')}.json"
    assert json.loads(path.read_text()) == DEEPSPEED_PRESETS[name]
    assert deepspeed_config(str(path)) == deepspeed_config(name)


def test_presets_keep_the_loop_in_charge_of_accumulation():
    for cfg in DEEPSPEED_PRESETS.values():
        assert cfg["gradient_accumulation_steps"] == 1 and cfg["zero_allow_untested_optimizer"]
    offload = DEEPSPEED_PRESETS["zero3-offload"]["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == "cpu"
    assert "offload_optimizer" not in DEEPSPEED_PRESETS["zero3"]["zero_optimization"]


def test_a_user_json_is_forced_to_exact_accumulation(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"gradient_accumulation_steps": 8,
                                "zero_optimization": {"stage": 2}}))
    cfg = deepspeed_config(str(path))
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["zero_optimization"]["stage"] == 2
    with pytest.raises(UserError, match="neither a preset"):
        deepspeed_config(str(tmp_path / "missing.json"))
    path.write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        deepspeed_config(str(path))


def test_the_8b_run_config_loads():
    data = yaml.safe_load((CONFIGS / "llama-8b-64k.yaml").read_text())
    cfg = load_run_config("default", data)
    assert cfg.packing.max_len == 65536
    t = cfg.training
    assert (t.distributed, t.deepspeed_config, t.gradient_checkpointing) == (
        "deepspeed", "zero3", True)
    assert t.deepspeed_config in DEEPSPEED_PRESETS
    assert (t.global_batch, t.max_grad_norm) == (8 * 65536, 1.0)


def test_fsdp2_shards_each_decoder_layer_and_refuses_models_without_them():
    """fsdp2 wraps the classes transformers names in _no_split_modules; a model naming none cannot be
    sharded layer by layer and is refused with one line."""
    import torch
    from training_helpers import tiny_llama

    from longalign.training.distributed import decoder_layers, shard_fsdp2

    layers = decoder_layers(tiny_llama())
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * 2
    assert decoder_layers(torch.nn.Linear(2, 2)) == []

    class CPU:
        device = torch.device("cpu")
        num_processes = 1

    with pytest.raises(UserError, match="names no decoder layer class"):
        shard_fsdp2(torch.nn.Linear(2, 2), CPU())
    assert not torch.distributed.is_initialized()  # refused before any process group exists