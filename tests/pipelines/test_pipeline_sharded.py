"""longalign-sharded-packing: the committed YAML matches the code (every packing step on the shared
volume, uncached), and kfp.local runs it with 3 parts and one writer per row file (ParallelFor over
a list and over a step's output, Collected) to the rows and stats of the one-process packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from longalign.config import PackingConfig
from longalign.formats import CHATS, ShardWriter
from longalign.orchestrate import compile_pipeline
from longalign.packing import pack
from packed_compare import same_packed

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pipelines" / "pipeline-sharded-packing.yaml"
CONFIG = {"max_len": 256, "seed": 2, "tokens_per_file": 400}  # several row files, one writer each


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
    loops = [t for t in ir["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 2 and all(t["iteratorPolicy"]["parallelismLimit"] > 1 for t in loops)
    # the row files are the plan step's output list
    assert loops[1]["parameterIterator"]["items"]["inputParameter"] == \
        "pipelinechannel--packing-plan-Output"
    check_volume_steps(COMMITTED, ["packing-part", "packing-plan", "packing-write",
                                   "packing-join"])


def check_volume_steps(path: Path, steps: list[str]) -> None:
    """Each step mounts the pipeline's claim at the volume path and is not cached (its effects
    live on the volume, which no cache key covers)."""
    from longalign.config import DATA_MOUNT

    ir, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {name: t for c in [ir["root"], *ir["components"].values()] if "dag" in c
             for name, t in c["dag"]["tasks"].items()}
    for step in steps:
        mounts = executors[f"exec-{step}"]["pvcMount"]
        assert [m["mountPath"] for m in mounts] == [DATA_MOUNT], step
        assert "pvc_name" in mounts[0]["pvcNameParameter"]["componentInputParameter"], step
        assert not tasks[step]["cachingOptions"].get("enableCache"), step


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
    volume = tmp_path / "volume"
    task = sharded_packing_pipeline(chats_uri=str(chats), base_model=tiny_model,
                                    packing_config=CONFIG, parts=[0, 1, 2], shared_dir=str(volume))
    packed = Path(task.outputs["packed"].path)
    stats = json.loads((packed / "stats.json").read_text())
    assert stats["skipped"] == {"duplicate_id": 1} and stats["rows"] > 1
    files = same_packed(one, packed, volume)
    assert files >= 3, "the test needs several row files (one packing_write pod each)"
    assert len(list((tmp_path / "root").rglob("written.json"))) == files
    parts = sorted((tmp_path / "root").rglob("tally.json"))
    assert sorted(json.loads(p.read_text())["rows"] for p in parts) == [[0, 6], [6, 13], [13, 20]]
