"""The whole DAG end to end on this machine (kfp.local, tiny preset), with caching.

The sources are a dir: folder and a git: repository made here, so the runs also show a weekly
retrain: unchanged data is served from the cache and registers nothing new; a new file in the
dir: source, or a new commit in the git: source, re-runs sourcing and every stage after it, and the
promotion gate compares the new model with the last promoted version (the run root's local index).
"""

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from longalign.config import load_run_config
from longalign.orchestrate import run_local
from longalign.promotion import LocalIndex

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")

STAGE_OUTPUTS = ("corpus", "chats", "packed", "model", "scores")
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                    "-c", "commit.gpgsign=false", *args], capture_output=True, check=True)


def copy(name: str, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STDLIB / name, to)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    data = tmp_path_factory.mktemp("data")
    books, repo = data / "books", data / "repo"
    for name in ("textwrap.py", "shlex.py", "bisect.py"):
        copy(name, books / f"{name}.txt")
    copy("colorsys.py", repo / "colorsys.py")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    sources = f"sourcing.sources={json.dumps([f'dir:{books}', f'git:{repo}'])}"
    root = tmp_path_factory.mktemp("kfp")

    def run(*overrides: str) -> dict:
        return run_local(load_run_config("tiny", overrides=[sources, *overrides]), root)

    out = {"root": root, "first": run(), "unchanged": run(), "changed": run("packing.max_len=1536")}
    copy("glob.py", books / "glob.py.txt")
    out["new_file"] = run()
    copy("keyword.py", repo / "keyword.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    out["new_commit"] = run()
    return out


def corpus_fingerprint(summary: dict) -> dict:
    return json.loads((Path(summary["outputs"]["corpus"]) / "stats.json").read_text())["data_fingerprint"]


def test_all_five_stages_write_their_artifacts(runs):
    first = runs["first"]["outputs"]
    assert sorted(Path(first["corpus"]).glob("documents-*.parquet"))
    assert sorted(Path(first["chats"]).glob("samples-*.parquet"))
    assert sorted(Path(first["packed"]).glob("rows-*.arrow"))
    assert (Path(first["model"]) / "config.json").is_file()
    assert sorted(Path(first["model"]).glob("*.safetensors"))
    assert (Path(first["scores"]) / "report.html").is_file()
    assert Path(first["report"]).is_file()
    metrics = json.loads(Path(first["metrics"]).read_text())
    assert metrics, "scoring metrics were not published"
    scores = runs["first"]["scores"]
    assert {"needle_accuracy", "recall_accuracy"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("needle_accuracy", "recall_accuracy"))


def test_identical_rerun_is_served_from_cache(runs):
    first, unchanged = runs["first"], runs["unchanged"]
    for name in STAGE_OUTPUTS:
        assert unchanged["outputs"][name] == first["outputs"][name], name


def test_changing_packing_reruns_packing_and_downstream_only(runs):
    a, b = runs["first"]["outputs"], runs["changed"]["outputs"]
    assert b["corpus"] == a["corpus"] and b["chats"] == a["chats"]
    for name in ("packed", "model", "scores"):
        assert b[name] != a[name], name
    meta = json.loads((Path(b["packed"]) / "meta.json").read_text())
    assert meta["max_len"] == 1536


def test_training_data_formats_reach_scoring_and_the_guard_fires(runs):
    """The tiny preset trains on synthetic kv_retrieval and needle chats: the formats travel from
    the chats through packing and training into scoring, which marks the suites sharing them."""
    out = runs["first"]["outputs"]
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


@pytest.mark.parametrize("change", ["new_file", "new_commit"])
def test_new_data_reruns_sourcing_and_every_stage_after_it(runs, change):
    before = runs["first" if change == "new_file" else "new_file"]
    after = runs[change]
    for name in STAGE_OUTPUTS:
        assert after["outputs"][name] != before["outputs"][name], (change, name)
        assert Path(after["outputs"][name]).exists()
    assert corpus_fingerprint(after)["digest"] != corpus_fingerprint(before)["digest"]


def test_sourcing_stats_record_what_the_fingerprint_saw(runs):
    books, repo = corpus_fingerprint(runs["new_commit"])["sources"]
    assert books["kind"] == "files" and books["files"] == 4
    assert repo["kind"] == "git" and len(repo["commit"]) == 40
    assert corpus_fingerprint(runs["first"])["sources"][0]["files"] == 3


def test_promotion_registers_the_first_model_and_not_the_cached_one_again(runs):
    first, unchanged = runs["first"]["promotion"], runs["unchanged"]["promotion"]
    assert (first["status"], first["version"]) == ("promoted", "v1")
    assert first["message"] == "promoted: longalign v1 (no promoted version yet)"
    assert unchanged["status"] == "unchanged" and unchanged["message"].startswith(
        "not promoted: this model is already longalign v1")
    assert first["data_fingerprint"] == corpus_fingerprint(runs["first"])["digest"]
    assert first["uri"] == runs["first"]["outputs"]["model"]


def test_new_models_are_compared_with_the_last_promoted_one(runs):
    versions = LocalIndex(runs["root"] / "registry").versions("longalign")
    for change in ("changed", "new_file", "new_commit"):
        decision = runs[change]["promotion"]
        assert decision["status"] in ("promoted", "blocked"), decision["message"]
        assert {r["suite"] for r in decision["comparison"]} == {"needle", "ruler-needle", "recall", "short"}
        assert all(r["previous"] is not None and r["current"] is not None for r in decision["comparison"])
        registered = [v for v in versions if v["uri"] == runs[change]["outputs"]["model"]]
        assert len(registered) == (decision["status"] == "promoted"), change
    assert versions[0]["properties"]["data_fingerprint"] == corpus_fingerprint(runs["first"])["digest"]
