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


def test_fsdp2_without_a_gpu_is_a_user_error(tmp_path, monkeypatch):
    from longalign.config import TrainingConfig
    from longalign.training.distributed import make_accelerator

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="fsdp2 needs CUDA"):
        make_accelerator(0, TrainingConfig(distributed="fsdp2"))
