"""longalign-sharded-data: the committed YAML matches the code, and kfp.local runs sourcing and
text packing with 3 parts each (ParallelFor, Collected) to the corpus and rows of one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from longalign.config import PackingConfig, SourcingConfig
from longalign.orchestrate import compile_pipeline
from longalign.packing import pack
from longalign.sourcing import source
from packed_compare import same_packed
from test_pipeline_sharded import check_volume_steps

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pipelines" / "pipeline-sharded-data.yaml"
WORDS = "amber basil cedar delta ember fjord grove heron iris juniper kelp lotus".split()


def doc(i: int) -> str:
    rng = np.random.default_rng(i)
    return "\n\n".join(" ".join(rng.choice(WORDS, 30)) + "." for _ in range(3 + i % 5)) + "\n"


def same_files(a: Path, b: Path, skip=("lengths.png", "result.json")) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name not in skip)
    assert names == sorted(p.name for p in b.iterdir() if p.name not in skip)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_committed_yaml_matches_code(tmp_path):
    compiled = compile_pipeline(tmp_path / "data.yaml", pipeline="longalign-sharded-data")
    assert list(yaml.safe_load_all(COMMITTED.read_text())) == list(yaml.safe_load_all(
        compiled.read_text())), "pipelines/pipeline-sharded-data.yaml is stale: run `make compile`"
    ir = next(yaml.safe_load_all(compiled.read_text()))
    check_volume_steps(COMMITTED, ["packing-part", "packing-plan", "packing-write",
                                   "packing-join"])
    defaults = ir["root"]["inputDefinitions"]["parameters"]["sourcing_config"]["defaultValue"]
    assert "max_documents" not in defaults and "mix" not in defaults


def test_kfp_local_three_parts_equal_one_process(tmp_path, tiny_model):
    from kfp import local

    from longalign.pipelines.sharded_data import sharded_data_pipeline

    src = tmp_path / "in"
    src.mkdir()
    for i in range(14):
        (src / f"d{i:02d}.txt").write_text(doc(i))
    (src / "d20_copy.txt").write_text(doc(2))  # a duplicate in another part
    sourcing = {"sources": [f"dir:{src}"], "min_tokens": 60, "max_tokens": 400,
                "near_dup_threshold": 0.9}
    packing = {"format": "text", "max_len": 256, "seed": 1, "tokens_per_file": 600}
    source(SourcingConfig(**sourcing), tiny_model, tmp_path / "corpus")
    pack(PackingConfig(**packing), tiny_model, tmp_path / "corpus", tmp_path / "packed")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = sharded_data_pipeline(base_model=tiny_model, sourcing_config=sourcing,
                                 text_packing_config=packing, parts=[0, 1, 2],
                                 shared_dir=str(tmp_path / "volume"))
    corpus, packed = Path(task.outputs["corpus"].path), Path(task.outputs["packed"].path)
    stats = json.loads((corpus / "stats.json").read_text())
    assert stats["rejected"].get("duplicate") == 1 and stats["documents_kept"] > 6
    same_files(tmp_path / "corpus", corpus)
    assert same_packed(tmp_path / "packed", packed, tmp_path / "volume") >= 2
    assert len(list((tmp_path / "root").rglob("prepared.parquet"))) == 3
