"""The whole DAG end to end on this machine (kfp.local, tiny preset), with caching."""

import json
from pathlib import Path

import pytest

from longalign.config import load_run_config
from longalign.orchestrate import run_local


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("kfp")
    first = run_local(load_run_config("tiny"), root)
    second = run_local(load_run_config("tiny"), root)
    changed = run_local(load_run_config("tiny", overrides=["packing.max_len=1536"]), root)
    return first, second, changed


def test_all_five_stages_write_their_artifacts(runs):
    first = runs[0]["outputs"]
    assert sorted(Path(first["corpus"]).glob("documents-*.parquet"))
    assert sorted(Path(first["chats"]).glob("samples-*.parquet"))
    assert sorted(Path(first["packed"]).glob("rows-*.arrow"))
    assert (Path(first["model"]) / "config.json").is_file()
    assert sorted(Path(first["model"]).glob("*.safetensors"))
    assert (Path(first["scores"]) / "report.html").is_file()
    assert Path(first["report"]).is_file()
    metrics = json.loads(Path(first["metrics"]).read_text())
    assert metrics, "scoring metrics were not published"
    scores = runs[0]["scores"]
    assert {"needle_accuracy", "recall_accuracy"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("needle_accuracy", "recall_accuracy"))


def test_identical_rerun_is_served_from_cache(runs):
    first, second, _ = runs
    assert second["outputs"] == first["outputs"]


def test_changing_packing_reruns_packing_and_downstream_only(runs):
    first, _, changed = runs
    a, b = first["outputs"], changed["outputs"]
    assert b["corpus"] == a["corpus"] and b["chats"] == a["chats"]
    for name in ("packed", "model", "scores"):
        assert b[name] != a[name], name
    meta = json.loads((Path(b["packed"]) / "meta.json").read_text())
    assert meta["max_len"] == 1536


def test_training_data_formats_reach_scoring_and_the_guard_fires(runs):
    """The tiny preset trains on synthetic kv_retrieval and needle chats: the formats travel from
    the chats through packing and training into scoring, which marks the suites sharing them."""
    out = runs[0]["outputs"]
    tasks = json.loads((Path(out["chats"]) / "stats.json").read_text())["samples"]["by_task"]
    assert tasks.get("kv_retrieval", 0) > 0
    meta = json.loads((Path(out["packed"]) / "meta.json").read_text())
    assert meta["data_tasks"] == tasks
    assert json.loads((Path(out["model"]) / "stats.json").read_text())["data_tasks"] == tasks
    verdict = json.loads((Path(out["scores"]) / "stats.json").read_text())["contamination"]
    assert verdict["data_tasks"] == tasks and verdict["mode"] == "mark"
    assert {"suite": "recall", "task": "kv", "training_task": "kv_retrieval",
            "samples": tasks["kv_retrieval"]} in verdict["shared"]
    assert "recall/kv shares the format of" in (Path(out["scores"]) / "report.html").read_text()
