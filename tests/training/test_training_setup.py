"""Settled before the first step: the global batch for the actual world size, and RoPE."""

import pytest
from transformers import AutoConfig

from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.training.data import MicroBatch
from longalign.training.distributed import DEEPSPEED_PRESETS
from longalign.training.setup import apply_rope, resolve_accumulation, resolved_batch


def _batches(n, rows=1, width=100):
    return [MicroBatch(i, rows=[(0, 0, i)] * rows, seq_lens=[[width]] * rows,
                       n_targets=[[1]] * rows) for i in range(n)]


@pytest.mark.parametrize("strategy,meta,rows,global_batch,unit", [
    ("sort", {"config": {"batch_size": 1}}, 1, 96, 1),  # LongAlign: 8 GPUs x 12 = 96 sequences
    ("naive", {"config": {"batch_size": 2}}, 2, 96, 2),
    ("pack", {"max_len": 65536}, 1, 8 * 65536, 65536),  # 8 rows of 64k tokens
])
def test_accumulation_keeps_the_global_batch_for_any_world_size(strategy, meta, rows,
                                                                global_batch, unit):
    config = TrainingConfig(global_batch=global_batch, gradient_accumulation_steps=5)
    seen = {}
    for world in (1, 2, 4, 8):
        info = resolved_batch(config, strategy, meta, _batches(4, rows), world)
        assert info["global_batch"] == global_batch and info["micro_batch"] == unit
        assert world * unit * info["gradient_accumulation_steps"] == global_batch
        seen[world] = info["gradient_accumulation_steps"]
    assert seen[1] == 8 * seen[8]
    # without global_batch the accumulation is per rank and the batch grows with the ranks
    plain = [resolved_batch(TrainingConfig(gradient_accumulation_steps=3), strategy, meta,
                            _batches(4, rows), w)["global_batch"] for w in (1, 8)]
    assert plain == [3 * unit, 24 * unit]


def test_global_batch_rounding_and_refusal():
    assert resolve_accumulation(100, world_size=8, unit=1, accumulation=1) == (12, 96)
    with pytest.raises(UserError, match="less than one micro-batch"):
        resolved_batch(TrainingConfig(global_batch=4), "sort", {}, _batches(2), 8)


def test_rope_settings_are_applied_to_the_config(tmp_path):
    cfg = AutoConfig.for_model("llama", hidden_size=32, num_attention_heads=4,
                               num_hidden_layers=1, intermediate_size=64)
    apply_rope(cfg, TrainingConfig(rope_theta=8e6, max_position_embeddings=65536,
                                   rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert cfg.rope_parameters["rope_theta"] == 8e6 and cfg.max_position_embeddings == 65536
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.rope_parameters["factor"] == 2.0
    with pytest.raises(UserError, match="rope_scaling"):
        apply_rope(cfg, TrainingConfig(rope_scaling={"rope_type": "no-such-type"}))


def test_clipping_is_on_by_default_and_reaches_deepspeed():
    assert TrainingConfig().max_grad_norm == 1.0
    assert all(c["gradient_clipping"] == 1.0 for c in DEEPSPEED_PRESETS.values())
