"""Answering cases with an Answerer and aggregating the scores per suite, cell and task."""

from __future__ import annotations

import logging
from collections import defaultdict
from statistics import mean

from longalign.scoring.answerer import Answerer
from longalign.scoring.cases import Case, score_case

log = logging.getLogger("longalign")
ANSWER_CHARS = 200  # raw answers are kept this short in scores.json
GRID_SUITES = ("needle", "ruler-needle")  # suites whose cells are (length, depth)


def evaluate(cases: list[Case], answerer: Answerer) -> dict:
    """Answer the cases and score them.

    Cases go to the answerer in one call per generation budget (so it can batch or share prefixes);
    cases whose answers need more new tokens than configured (``Case.answer_tokens``, e.g. UUIDs) go
    through ``answerer.with_budget(n)`` when the answerer offers it. Returns
    ``{suite: {"accuracy", "cases", "cells", "tasks", "prompt_tokens", "truncated", "answers"}}``; needle
    cells are per (length, depth), recall cells per (task, length); accuracy is the mean case score.
    """
    answers: list[str] = [""] * len(cases)
    fed = [c.prompt_tokens for c in cases]
    groups: dict[int, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case.answer_tokens, []).append(i)
    for budget, idx in sorted(groups.items()):
        who = answerer.with_budget(budget) if budget and hasattr(answerer, "with_budget") else answerer
        got = who.answer([cases[i].messages for i in idx])
        if len(got) != len(idx):
            raise RuntimeError(f"the answerer returned {len(got)} answers for {len(idx)} prompts")
        used = getattr(who, "prompt_tokens", None)
        for k, i in enumerate(idx):
            answers[i] = got[k]
            if used is not None and len(used) == len(idx):
                fed[i] = used[k]
    empty = sum(not (a if isinstance(a, str) else "").strip() for a in answers)
    if empty:
        log.warning("%d of %d answers are empty (scored 0)", empty, len(answers))
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for case, answer, tokens in zip(cases, answers, fed):
        answer = answer if isinstance(answer, str) else ""
        row = {"task": case.task, "length": case.length, "index": case.index,
               "prompt_tokens": case.prompt_tokens, "fed_tokens": tokens,
               "expected": case.expected if case.kind in ("set", "any") else case.expected[0],
               "answer": answer[:ANSWER_CHARS], "score": score_case(case, answer)}
        if case.depth is not None:
            row["depth"] = case.depth
            row["needle_depth"] = case.extra.get("needle_depth")
        by_suite[case.suite].append(row)
    return {suite: _summarise(suite, rows) for suite, rows in by_suite.items()}


def _summarise(suite: str, rows: list[dict]) -> dict:
    cells: dict[tuple, list[float]] = defaultdict(list)
    tasks: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        key = (row["length"], row["depth"]) if suite in GRID_SUITES else (row["task"], row["length"])
        cells[key].append(row["score"])
        tasks[row["task"]].append(row["score"])
    names = ("length", "depth") if suite in GRID_SUITES else ("task", "length")
    tokens = [row["prompt_tokens"] for row in rows]
    return {
        "accuracy": mean(row["score"] for row in rows),
        "cases": len(rows),
        "cells": [{names[0]: k[0], names[1]: k[1], "score": mean(v), "n": len(v)}
                  for k, v in sorted(cells.items())],
        "tasks": {task: mean(v) for task, v in sorted(tasks.items())},
        "prompt_tokens": {"min": min(tokens), "max": max(tokens)},
        "truncated": sum(row["fed_tokens"] < row["prompt_tokens"] for row in rows),
        "empty_answers": sum(not row["answer"].strip() for row in rows),
        "answers": rows,
    }


def headline(summary: dict) -> float | None:
    """A suite's one number: exact-match accuracy in [0, 1], or LongBench-Chat's mean rating (1-10)."""
    return summary["accuracy"] if "accuracy" in summary else summary.get("score")


def metric_name(suite: str) -> str:
    return suite.replace("-", "_")


def _depth(depth: float) -> str:
    return f"{round(depth * 100):02d}"


def suite_metrics(suite: str, summary: dict) -> dict[str, float]:
    """One suite's KFP metrics: its headline plus per-task/per-cell values (unprefixed)."""
    name = metric_name(suite)
    out: dict[str, float] = {}
    if suite == "longbench-chat":
        values = {"score": summary.get("score"), "reference_sum": summary.get("reference_sum"),
                  "unjudged": summary.get("unjudged"), "empty_answers": summary.get("empty_answers"),
                  "out_of_scale": summary.get("out_of_scale")}
        values.update({f"run{r['run']}_mean": r["mean"] for r in summary.get("runs", [])})
        values.update({f"{lang}_score": v["score"] for lang, v in summary.get("languages", {}).items()})
        return {f"{name}_{k}": round(float(v), 6) for k, v in values.items() if v is not None}
    out[f"{name}_accuracy"] = round(summary["accuracy"], 6)
    if summary.get("judge_score") is not None:  # LongAlign's needle with a judge: 1-10
        out[f"{name}_judge_score"] = round(summary["judge_score"], 6)
    for task, value in summary.get("tasks", {}).items():
        if suite in ("recall", "short"):
            out[f"{name}_{task}_accuracy"] = round(value, 6)
    for cell in summary.get("cells", []) if suite != "short" else []:  # short: per task only
        key = (f"{name}_{cell['length']}_d{_depth(cell['depth'])}" if suite in GRID_SUITES
               else f"{name}_{cell['task']}_{cell['length']}")
        out[key] = round(cell["score"], 6)
    return out


def headline_key(suite: str) -> str:
    """The metric holding a suite's one number (``needle_accuracy``, ``longbench_chat_score``)."""
    return f"{metric_name(suite)}_{'score' if suite == 'longbench-chat' else 'accuracy'}"


def headline_metrics(results: dict[str, dict], flat: dict[str, float]) -> dict[str, float]:
    """What a run summary shows, taken from the flat ``metrics``: each suite's one number for each
    model (``needle_accuracy``, ``base_needle_accuracy``), ``<suite>_delta`` and, against a
    baseline, ``<suite>_vs_baseline``; the per-cell values stay in ``metrics`` and the report."""
    keys = []
    for label, result in results.items():
        prefix = "" if label == "model" else f"{label}_"
        keys += [prefix + headline_key(suite) for suite in result["suites"]]
    for suite in results.get("model", {}).get("suites", {}):
        keys += [f"{metric_name(suite)}_delta", f"{metric_name(suite)}_vs_baseline"]
    return {k: flat[k] for k in keys if k in flat}


def metrics(results: dict[str, dict]) -> dict[str, float]:
    """Flat KFP metrics: per suite its headline (``needle_accuracy``, ``recall_accuracy``,
    ``longbench_chat_score``) and per-cell values (``needle_<length>_d<depth%>``,
    ``recall_<task>_<length>``, ``recall_<task>_accuracy``, LongBench-Chat per run and language);
    the same with a ``base_`` prefix for the base model, and ``<suite>_delta`` (model minus base)."""
    out: dict[str, float] = {}
    for label, result in results.items():
        prefix = "" if label == "model" else f"{label}_"
        for suite, summary in result["suites"].items():
            out.update({prefix + k: v for k, v in suite_metrics(suite, summary).items()})
    if "base" in results:
        for suite, summary in results["model"]["suites"].items():
            other = results["base"]["suites"].get(suite)
            mine, theirs = headline(summary), headline(other) if other else None
            if mine is not None and theirs is not None:
                out[f"{metric_name(suite)}_delta"] = round(mine - theirs, 6)
    return out
