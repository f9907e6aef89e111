"""promote() with the local file index: register, block, keep, roll back."""

from __future__ import annotations

import json

import pytest

from longalign.config import PromotionConfig
from longalign.errors import UserError
from longalign.promotion import LocalIndex, promote


@pytest.fixture
def config(tmp_path):
    return PromotionConfig(index_dir=str(tmp_path / "registry"))


def run(config, made, out, **kw):
    model, scores, corpus = made
    return promote(config, model, scores, out, corpus_dir=corpus, **kw)


def test_first_model_is_registered_with_scores_fingerprint_and_run_id(config, outputs, tmp_path):
    made = outputs("one", {"needle": 0.5, "recall": 0.25}, fingerprint="a" * 64)
    decision = run(config, made, tmp_path / "d1", run_id="run-1", base_model="embedded:tiny")
    assert decision["status"] == "promoted" and decision["version"] == "v1"
    assert decision["message"] == "promoted: longalign v1 (no promoted version yet)"
    (entry,) = LocalIndex(config.index_dir).versions("longalign")
    assert entry["state"] == "LIVE" and entry["uri"] == str(made[0].resolve())
    props = entry["properties"]
    assert props["score:needle"] == 0.5 and props["score:recall"] == 0.25
    assert (props["data_fingerprint"], props["pipeline_run_id"], props["base_model"]) == ("a" * 64, "run-1",
                                                                                        "embedded:tiny")
    written = json.loads((tmp_path / "d1" / "decision.json").read_text())
    assert written["status"] == "promoted" and "promoted: longalign v1" in (tmp_path / "d1" / "report.md").read_text()


def test_regressed_model_is_blocked_and_improved_one_registered(config, outputs, tmp_path):
    run(config, outputs("one", {"needle": 0.5, "recall": 0.5}), tmp_path / "d1")
    worse = run(config, outputs("two", {"needle": 0.25, "recall": 0.5}), tmp_path / "d2")
    assert worse["status"] == "blocked" and worse["version"] is None
    assert worse["message"] == ("not promoted: needle 0.5 -> 0.25 (fell 0.25, margin 0.02) "
                                "(against longalign v1)")
    assert worse["metrics"] == {"promoted": 0, "needle_vs_promoted": -0.25, "recall_vs_promoted": 0.0}
    assert len(LocalIndex(config.index_dir).versions("longalign")) == 1
    better = run(config, outputs("three", {"needle": 0.75, "recall": 0.5}), tmp_path / "d3")
    assert better["status"] == "promoted" and better["version"] == "v2"
    assert better["last_promoted"]["version"] == "v1"
    assert {r["suite"]: r["verdict"] for r in better["comparison"]} == {"needle": "better", "recall": "same"}
    assert "| needle | 0.5 | 0.75 | +0.25 | 0.02 | better |" in (tmp_path / "d3" / "report.md").read_text()


def test_blocked_promotion_fails_the_step_only_when_configured(config, outputs, tmp_path):
    run(config, outputs("one", {"needle": 0.5}), tmp_path / "d1")
    strict = config.model_copy(update={"fail_on_block": True})
    with pytest.raises(UserError, match=r"^not promoted: needle 0.5 -> 0 "):
        run(strict, outputs("two", {"needle": 0.0}), tmp_path / "d2")


def test_the_same_model_again_is_not_registered_twice(config, outputs, tmp_path):
    made = outputs("one", {"needle": 0.5})
    run(config, made, tmp_path / "d1")
    again = run(config, made, tmp_path / "d2")
    assert again["status"] == "unchanged"
    assert again["message"].startswith("not promoted: this model is already longalign v1")
    assert len(LocalIndex(config.index_dir).versions("longalign")) == 1


def test_rolling_back_makes_the_earlier_version_the_one_to_beat(config, outputs, tmp_path):
    run(config, outputs("one", {"needle": 0.5}), tmp_path / "d1")
    run(config, outputs("two", {"needle": 0.9}), tmp_path / "d2")
    index = LocalIndex(config.index_dir)
    index.set_state("longalign", "v2", "ARCHIVED")
    decision = run(config, outputs("three", {"needle": 0.6}), tmp_path / "d3")
    assert decision["last_promoted"]["version"] == "v1" and decision["status"] == "promoted"
    assert decision["version"] == "v3"
    with pytest.raises(UserError, match="no version 'v9'"):
        index.set_state("longalign", "v9", "ARCHIVED")


def test_launcher_pointer_uri_is_what_gets_registered(config, outputs, tmp_path):
    model, scores, corpus = outputs("one", {"needle": 0.5})
    (model / "pointer.json").write_text(json.dumps({"path": "/mnt/longalign/runs/x/model",
                                                     "uri": "pvc://longalign-data/runs/x/model"}))
    decision = promote(config, model, scores, tmp_path / "d1", corpus_dir=corpus, uri="minio://ignored")
    assert decision["uri"] == "pvc://longalign-data/runs/x/model"


def test_changed_scoring_settings_are_noted(config, outputs, tmp_path):
    run(config, outputs("one", {"needle": 0.5}, lengths=(512,)), tmp_path / "d1")
    decision = run(config, outputs("two", {"needle": 0.5}, lengths=(1024,)), tmp_path / "d2")
    assert decision["notes"] == ["scoring settings differ from v1's: the comparison is not like-for-like"]


def test_a_folder_without_scores_is_a_user_error(config, outputs, tmp_path):
    model, scores, corpus = outputs("one", {"needle": 0.5})
    (scores / "scores.json").unlink()
    with pytest.raises(UserError, match="missing file"):
        promote(config, model, scores, tmp_path / "d1", corpus_dir=corpus)
