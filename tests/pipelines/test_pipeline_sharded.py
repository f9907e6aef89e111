"""longalign-sharded-packing: the committed YAML matches the code, and kfp.local runs it with 3
parts (ParallelFor, Collected) to the rows and stats of the one-process packing stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from longalign.config import PackingConfig
from longalign.formats import CHATS, ShardWriter
from longalign.orchestrate import compile_pipeline
from longalign.packing import pack

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pipelines" / "pipeline-sharded-packing.yaml"
CONFIG = {"max_len": 256, "seed": 2}


def chat(i: int) -> dict:
    messages = []
    for t in range(1 + i % 2):
        messages.append({"role": "user", "content": f"doc{i}.{t} " + "word " * (5 + (i * 31) % 90)})
        messages.append({"role": "assistant", "content": f"Answer {i}.{t}."})
    return {"id": f"c{i:03d}" if i != 17 else "c002", "messages": messages, "task": "qa",
            "teacher": "synthetic", "doc_id": f"d{i}", "reference": None, "n_chars": 1}


def test_committed_yaml_matches_code(tmp_path):
    compiled = compile_pipeline(tmp_path / "sharded.yaml", pipeline="longalign-sharded-packing")
    assert list(yaml.safe_load_all(COMMITTED.read_text())) == list(yaml.safe_load_all(
        compiled.read_text())), "pipelines/pipeline-sharded-packing.yaml is stale: run `make compile`"
    ir = next(yaml.safe_load_all(compiled.read_text()))
    loop = next(t for t in ir["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"]["parallelismLimit"] > 1


def test_kfp_local_three_parts_equal_one_process(tmp_path, tiny_model):
    from kfp import local

    from longalign.pipelines.sharded import sharded_packing_pipeline

    chats = tmp_path / "chats"
    chats.mkdir()
    writer = ShardWriter(CHATS, chats, group_rows=4)
    for i in range(20):  # c002 twice: the duplicate is in another part
        writer.add(chat(i))
    writer.flush()
    one = tmp_path / "one"
    pack(PackingConfig(**CONFIG), tiny_model, chats, one)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = sharded_packing_pipeline(chats_uri=str(chats), base_model=tiny_model,
                                    packing_config=CONFIG, parts=[0, 1, 2])
    packed = Path(task.outputs["packed"].path)
    stats = json.loads((packed / "stats.json").read_text())
    assert stats["skipped"] == {"duplicate_id": 1} and stats["rows"] > 1
    names = sorted(p.name for p in one.iterdir() if p.name not in ("lengths.png", "result.json"))
    assert names == sorted(p.name for p in packed.iterdir()
                           if p.name not in ("lengths.png", "result.json"))
    for name in names:
        assert (one / name).read_bytes() == (packed / name).read_bytes(), name
    parts = sorted((tmp_path / "root").rglob("tally.json"))
    assert sorted(json.loads(p.read_text())["rows"] for p in parts) == [[0, 6], [6, 13], [13, 20]]
