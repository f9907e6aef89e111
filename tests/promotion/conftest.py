"""Fixtures of the promotion tests: scoring and sourcing outputs of the shape the stages write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # model_registry_server


@pytest.fixture
def outputs(tmp_path):
    """make(name, {suite: headline}) -> (model_dir, scores_dir, corpus_dir) of one finished run."""

    def make(name: str, suites: dict[str, float], fingerprint: str = "f" * 64, lengths=(512,)):
        run = tmp_path / name
        model, scores, corpus = run / "model", run / "scores", run / "corpus"
        for folder in (model, scores, corpus):
            folder.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        summaries = {s: ({"score": v} if s == "longbench-chat" else {"accuracy": v, "cases": 4})
                     for s, v in suites.items()}
        (scores / "scores.json").write_text(json.dumps({
            "config": {"suites": list(suites), "lengths": list(lengths)},
            "models": {"model": {"spec": str(model), "suites": summaries}}}))
        (corpus / "stats.json").write_text(json.dumps({"data_fingerprint": {"digest": fingerprint}}))
        return model, scores, corpus

    return make
