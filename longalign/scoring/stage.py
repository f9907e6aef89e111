"""The scoring stage: score a fine-tuned model (and its base) on the needle and recall suites."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from longalign.config import ScoringConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, require_dir, write_json
from longalign.models import load_model, load_tokenizer, resolve_model
from longalign.scoring.answerer import Answerer, TransformersAnswerer
from longalign.scoring.cases import Case
from longalign.scoring.evaluate import evaluate, metrics
from longalign.scoring.haystack import Haystack, HaystackSource, load_source
from longalign.scoring.needle import needle_cases
from longalign.scoring.recall import recall_cases
from longalign.scoring.report import heatmap_png, write_html, write_markdown

log = logging.getLogger("longalign")


def _check(config: ScoringConfig) -> tuple[list[int], list[float]]:
    lengths = sorted(set(config.lengths))
    depths = sorted(set(config.depths))
    if lengths[0] < 1:
        raise UserError(f"scoring.lengths must be positive token counts, got {lengths[0]}")
    if depths[0] < 0 or depths[-1] > 1:
        raise UserError(f"scoring.depths must lie in [0, 1], got {config.depths}")
    return lengths, depths


def recall_lengths(lengths: list[int]) -> list[int]:
    """Recall runs at the largest configured length only (it is the hardest and keeps runtime small)."""
    return [max(lengths)]


def build_cases(config: ScoringConfig, tokenizer, source: HaystackSource) -> list[Case]:
    """All cases of the configured suites, calibrated to ``tokenizer``."""
    lengths, depths = _check(config)
    hay = Haystack(source.text, tokenizer, max(lengths))
    cases: list[Case] = []
    if "needle" in config.suites:
        cases += needle_cases(hay, tokenizer, lengths, depths, config.seed)
    if "recall" in config.suites:
        cases += recall_cases(hay, tokenizer, recall_lengths(lengths), config.recall_samples, config.seed)
    return cases


def score_answerer(config: ScoringConfig, spec: str, tokenizer, answerer: Answerer,
                   source: HaystackSource) -> dict:
    """Build the cases for ``tokenizer``, answer them with ``answerer`` and summarise (one model)."""
    start = time.monotonic()
    cases = build_cases(config, tokenizer, source)
    suites = evaluate(cases, answerer)
    seconds = time.monotonic() - start
    for suite, summary in suites.items():
        log.info("%s %s accuracy %.3f (%d cases)", spec, suite, summary["accuracy"], summary["cases"])
    return {"spec": spec, "suites": suites, "seconds": round(seconds, 2),
            "truncated_prompts": sum(s["truncated"] for s in suites.values())}


def _score_local(config: ScoringConfig, spec: str, source: HaystackSource) -> dict:
    import torch

    torch.manual_seed(config.seed)
    start = time.monotonic()
    tokenizer = load_tokenizer(spec)
    model = load_model(spec)
    answerer = TransformersAnswerer(model, tokenizer, config.max_new_tokens)
    result = score_answerer(config, spec, tokenizer, answerer, source)
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def write_outputs(out: Path, config: ScoringConfig, results: dict[str, dict], haystack: dict,
                  seconds: float) -> dict:
    """Write scores.json, stats.json, needle.png, report.html and report.md into ``out``; return stats."""
    flat = metrics(results)
    stats = {
        "metrics": flat,
        "models": {label: {"spec": r["spec"], "seconds": r["seconds"],
                           "truncated_prompts": r["truncated_prompts"],
                           "cases": {s: v["cases"] for s, v in r["suites"].items()}}
                   for label, r in results.items()},
        "haystack": haystack,
        "recall_lengths": recall_lengths(list(config.lengths)) if "recall" in config.suites else [],
        "seconds": round(seconds, 2),
    }
    write_json(out / "scores.json", {"config": config.model_dump(), "models": results, "haystack": haystack})
    write_json(out / "stats.json", stats)
    png = heatmap_png(results)
    if png:
        (out / "needle.png").write_bytes(png)
    write_html(out / "report.html", results, stats, png)
    write_markdown(out / "report.md", results, flat)
    return stats


def score(config: ScoringConfig, model: str | os.PathLike, output: str | os.PathLike, *,
          base_model: str | None = None, corpus: str | os.PathLike | None = None,
          overwrite: bool = False) -> dict:
    """Score ``model`` (and ``base_model`` when ``config.compare_base``) and write the output directory.

    ``model`` is a model spec or a fine-tuned checkpoint directory; ``corpus`` an optional sourcing
    output whose texts become the haystack (default: Python standard-library sources). Writes
    scores.json, stats.json, needle.png, report.html and report.md; returns the stats.
    """
    start = time.monotonic()
    lengths, _ = _check(config)
    specs = {"model": str(model)}
    if config.compare_base and base_model:
        specs["base"] = str(base_model)
    if isinstance(model, os.PathLike):  # a path object is always meant as a checkpoint directory
        require_dir(model, "model directory")
    for spec in specs.values():  # a missing directory or unknown spec fails before any work
        resolve_model(spec)
    source = load_source(corpus, max(lengths))
    with atomic_dir(output, overwrite=overwrite) as tmp:
        results: dict[str, dict] = {}
        for label, spec in specs.items():
            if label == "base" and spec == specs["model"]:
                results[label] = results["model"]
                continue
            log.info("scoring %s (%s)", label, spec)
            results[label] = _score_local(config, spec, source)
        stats = write_outputs(tmp, config, results, source.info, time.monotonic() - start)
    return stats
