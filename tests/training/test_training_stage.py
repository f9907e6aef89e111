"""train() end to end on tiny packed directories with the embedded tiny model."""

import json

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_samples, one_thread, write_packed  # noqa: F401 (fixture)

from longalign.results import StageResult
from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.models import resolve_model
from longalign.training import train

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(learning_rate=1e-2, warmup_ratio=0.0)


@pytest.fixture
def packed(tmp_path):
    # four samples that fit one row: every step sees the same batch, so losses are comparable
    return write_packed(tmp_path / "packed", make_samples(4, 500, seed=1), max_len=128)


def test_train_learns_saves_a_loadable_model_and_reports(tmp_path, packed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model"
    stats = train(TrainingConfig(epochs=6, **FAST), "embedded:tiny", packed, out)
    assert stats["steps"] == 6 and len(stats["loss"]) == 6
    assert stats["loss"][-1] < 0.8 * stats["loss"][0]
    assert stats["tokens"] == 6 * json.loads((packed / "meta.json").read_text())["tokens"]
    assert stats["metrics"]["final_loss"] == stats["loss"][-1] and stats["tokens_per_second"] > 0
    assert stats["loss_by_length"] and stats["attn_implementation"] == "longalign_sdpa"
    assert json.loads((out / "stats.json").read_text())["loss"] == stats["loss"]
    assert StageResult.load(out).headline == {"final_loss": stats["loss"][-1]} == stats.headline
    assert (out / "loss.png").stat().st_size > 0
    assert "final loss" in (out / "summary.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache is True  # the training-time setting is not saved
    assert AutoTokenizer.from_pretrained(out).chat_template
    # the saved model is the trained one
    ids = torch.tensor([[5, 6, 7, 8]])
    base = AutoModelForCausalLM.from_pretrained(resolve_model("embedded:tiny"))
    with torch.no_grad():
        assert (model(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-3


def test_train_is_deterministic_for_a_seed(tmp_path):
    packed = write_packed(tmp_path / "packed", make_samples(10, 500, seed=2), max_len=48)
    a = train(TrainingConfig(epochs=2, **FAST), "embedded:tiny", packed, tmp_path / "a")
    b = train(TrainingConfig(epochs=2, **FAST), "embedded:tiny", packed, tmp_path / "b")
    c = train(TrainingConfig(epochs=2, seed=1, **FAST), "embedded:tiny", packed, tmp_path / "c")
    assert a["loss"] == b["loss"] and a["loss"] != c["loss"]
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sort_strategy_with_accumulation_and_max_steps(tmp_path):
    packed = write_packed(tmp_path / "packed", make_samples(7, 500, seed=3), strategy="sort",
                          batch_size=2)
    stats = train(TrainingConfig(gradient_accumulation_steps=2, max_steps=3, loss="token",
                                 gradient_checkpointing=True, **FAST),
                  "embedded:tiny", packed, tmp_path / "out")
    assert stats["steps"] == 3 and stats["micro_batches"] == 4
    total = sum(len(s) for s, _ in make_samples(7, 500, seed=3))
    assert stats["step_tokens"][0] + stats["step_tokens"][1] == total  # one epoch, no padding
    assert stats["epoch_of_step"] == [0, 0, 1]


def test_failures_write_nothing(tmp_path, packed):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not found"):
        train(TrainingConfig(), "embedded:tiny", tmp_path / "missing", out)
    assert not out.exists()
    bad = make_samples(2, 500)
    bad[0] = ([60000] + bad[0][0][1:], bad[0][1])
    bad_dir = write_packed(tmp_path / "bad", bad)
    with pytest.raises(UserError, match="vocabulary"):
        train(TrainingConfig(), "embedded:tiny", bad_dir, out)
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        train(TrainingConfig(), "embedded:tiny", packed, out)
    assert (out / "keep.txt").exists()


def test_rope_global_batch_and_clipping_reach_the_saved_model_and_stats(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    packed = write_packed(tmp_path / "packed", make_samples(12, 500, seed=5), strategy="sort",
                          batch_size=2)
    config = TrainingConfig(epochs=1, global_batch=4, max_grad_norm=0.5, rope_theta=2.5e5,
                            max_position_embeddings=32768, **FAST)
    out = tmp_path / "model"
    stats = train(config, "embedded:tiny", packed, out)
    assert stats["gradient_accumulation_steps"] == 2 and stats["global_batch"] == 4
    assert stats["global_batch_unit"] == "sequences" and stats["steps"] == 3
    assert stats["metrics"]["global_batch"] == 4 and stats["metrics"]["max_grad_norm"] == 0.5
    assert len(stats["grad_norm"]) == 3 and all(n > 0 for n in stats["grad_norm"])
    assert stats["metrics"]["grad_norm_max"] == max(stats["grad_norm"])
    saved = AutoConfig.from_pretrained(out)
    assert saved.rope_parameters["rope_theta"] == 2.5e5
    assert saved.max_position_embeddings == 32768
    assert stats["rope_theta"] == 2.5e5 and stats["max_position_embeddings"] == 32768
    # the model trains with the new base (the rotary table is built from the changed config),
    # and a reload of the output builds the same table
    from longalign.training.stage import load_training_model

    trained, _, _ = load_training_model("embedded:tiny", config=config)
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("embedded:tiny"))
    inv_freq = model.model.rotary_emb.inv_freq
    dim = inv_freq.numel() * 2
    expected = 1.0 / (2.5e5 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    assert torch.allclose(inv_freq, expected)
    assert torch.allclose(trained.model.rotary_emb.inv_freq, expected)
    assert not torch.allclose(base.model.rotary_emb.inv_freq, expected)
