"""Comparison with a baseline: a previous run's scores.json (e.g. last week's retrain).

Suites and cells present in both runs are compared on their headline numbers (accuracy, or
LongBench-Chat's mean rating); config differences that make a comparison not like-for-like
(lengths, depths, samples, seed, judge model and runs, benchmark subset) are listed with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from longalign.errors import UserError
from longalign.io import read_json
from longalign.scoring.evaluate import GRID_SUITES, headline, metric_name

COMPARED = ("lengths", "depths", "recall_samples", "seed")
EPSILON = 1e-9


def load_baseline(path: str | os.PathLike) -> dict:
    """A previous scores.json (``path`` is the file or the scoring output directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "scores.json"
    data = read_json(path)
    model = data.get("models", {}).get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("suites"), dict):
        raise UserError(f"baseline {path} is not a longalign scores.json (no models.model.suites)")
    data["path"] = str(path)
    return data


def _verdict(delta: float) -> str:
    return "better" if delta > EPSILON else "worse" if delta < -EPSILON else "same"


def _cells(suite: str, summary: dict) -> dict[str, float]:
    if suite == "longbench-chat":
        return {f"{lang}": v["score"] for lang, v in summary.get("languages", {}).items()}
    if suite in GRID_SUITES:
        return {f"{c['length']} @ {c['depth']:.0%}": c["score"] for c in summary.get("cells", [])}
    return {f"{c['task']} @ {c['length']}": c["score"] for c in summary.get("cells", [])}


def _config_changes(old: dict, new: dict) -> list[str]:
    changes = [f"{k}: {old.get(k)} -> {new.get(k)}" for k in COMPARED if old.get(k) != new.get(k)]
    o, n = old.get("longbench_chat") or {}, new.get("longbench_chat") or {}
    judge_o, judge_n = (o.get("judge") or {}).get("model"), (n.get("judge") or {}).get("model")
    if judge_o != judge_n and "longbench-chat" in new.get("suites", []):
        changes.append(f"judge model: {judge_o} -> {judge_n}")
    for key in ("judge_runs", "limit", "temperature"):
        if o.get(key) != n.get(key) and "longbench-chat" in new.get("suites", []):
            changes.append(f"longbench_chat.{key}: {o.get(key)} -> {n.get(key)}")
    return changes


def compare(current: dict, config: dict, baseline: dict) -> dict:
    """Suite and cell deltas of ``current`` (this run's ``model`` result) against ``baseline``."""
    old_suites = baseline["models"]["model"]["suites"]
    suites, cells = [], []
    for suite, summary in current["suites"].items():
        before = old_suites.get(suite)
        if before is None:
            continue
        new_value, old_value = headline(summary), headline(before)
        if new_value is not None and old_value is not None:
            delta = new_value - old_value
            suites.append({"suite": suite, "baseline": old_value, "current": new_value,
                           "delta": delta, "verdict": _verdict(delta)})
        old_cells = _cells(suite, before)
        for name, value in _cells(suite, summary).items():
            if name in old_cells and value is not None and old_cells[name] is not None:
                delta = value - old_cells[name]
                cells.append({"suite": suite, "cell": name, "baseline": old_cells[name],
                              "current": value, "delta": delta, "verdict": _verdict(delta)})
    return {"path": baseline["path"], "spec": baseline["models"]["model"].get("spec"),
            "suites": suites, "cells": cells,
            "config_changes": _config_changes(baseline.get("config") or {}, config)}


def baseline_metrics(comparison: dict) -> dict[str, float]:
    return {f"{metric_name(r['suite'])}_vs_baseline": round(r["delta"], 6) for r in comparison["suites"]}
