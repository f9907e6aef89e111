"""longalign-extend end to end on this machine (kfp.local, tiny preset): text packing, continued
pre-training with a new RoPE base, fine-tuning from the extended model, scoring against the base;
a changed pretrain config re-runs only pretrain and what depends on it."""

import json
from pathlib import Path

import pytest

from longalign.config import load_run_config
from longalign.orchestrate import run_local

PIPELINE = "longalign-extend"
SET = ["scoring.lengths=[1024]", "scoring.depths=[0.5]", "scoring.recall_samples=1",
       "extend.packing.max_len=1024"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("kfp")
    first = run_local(load_run_config("tiny", overrides=SET), root, pipeline=PIPELINE)
    changed = run_local(load_run_config("tiny", overrides=SET + ["extend.training.rope_theta=2e5"]),
                        root, pipeline=PIPELINE)
    return first["outputs"], changed["outputs"], first


def _config(path) -> dict:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return {"rope_theta": (cfg.get("rope_parameters") or cfg)["rope_theta"],
            "max_position_embeddings": cfg["max_position_embeddings"]}


def test_every_stage_writes_and_the_model_is_extended_then_tuned(runs):
    out, _, first = runs
    meta = json.loads((Path(out["text_packed"]) / "meta.json").read_text())
    assert meta["format"] == "text" and meta["max_len"] == 1024
    pretrain = json.loads((Path(out["extended"]) / "stats.json").read_text())
    assert pretrain["objective"] == "pretrain" and pretrain["loss_mode"] == "token"
    assert pretrain["document_masking"] is True
    assert _config(out["extended"]) == {"rope_theta": 1e5, "max_position_embeddings": 32768}
    tuned = json.loads((Path(out["model"]) / "stats.json").read_text())
    assert tuned["model"] == out["extended"] and tuned["objective"] == "finetune"
    assert _config(out["model"]) == _config(out["extended"])  # fine-tuning keeps the extension
    assert json.loads((Path(out["packed"]) / "meta.json").read_text())["format"] == "chat"
    scores = first["scores"]
    assert {"needle_accuracy", "recall_accuracy"} <= set(scores)
    report = json.loads((Path(out["scores"]) / "scores.json").read_text())
    assert "1024" in json.dumps(report) and "base" in json.dumps(report)


def test_changing_pretrain_reruns_pretrain_and_downstream_only(runs):
    a, b, _ = runs
    for name in ("corpus", "text_packed", "chats", "packed"):
        assert a[name] == b[name], name
    for name in ("extended", "model", "scores"):
        assert a[name] != b[name], name
    assert _config(b["extended"])["rope_theta"] == 2e5
