"""The scoring stage: score a fine-tuned model (and its base) on the needle and recall suites."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from longalign.config import ScoringConfig
from longalign.endpoints import Client as Endpoint, check_failures
from longalign.endpoints.failures import reasons_text
from longalign.errors import UserError
from longalign.io import atomic_dir, require_dir, write_json
from longalign.models import load_model, load_tokenizer, resolve_model
from longalign.results import StageResult, numeric
from longalign.scoring.answerer import Answerer, TransformersAnswerer
from longalign.scoring.baseline import baseline_metrics, compare, load_baseline
from longalign.scoring.cases import Case
from longalign.scoring.contamination import guard
from longalign.scoring.evaluate import GRID_SUITES, evaluate, headline_metrics, metrics
from longalign.scoring.haystack import Haystack, HaystackSource, load_source
from longalign.scoring.longbench import SUITE as LBC, judge_endpoint, run_suite
from longalign.scoring.longbench_data import Benchmark, load_benchmark
from longalign.scoring.needle import ANSWER_TOKENS as NEEDLE_ANSWER_TOKENS
from longalign.scoring.needle import REFERENCE_LENGTHS, longalign_grid, needle_cases
from longalign.scoring.needle_judge import judge_needle
from longalign.scoring.recall import recall_cases
from longalign.scoring.short import short_cases
from longalign.scoring.ruler_needle import needle_cases as ruler_needle_cases
from longalign.scoring.remote import OpenAIAnswerer
from longalign.scoring.verdict import references, verdict, without_signal
from longalign.scoring.report import heatmap_png, write_html, write_markdown
from longalign.precision import inference_placement
from longalign.secrets import read_api_key

log = logging.getLogger("longalign")


def _check(config: ScoringConfig) -> tuple[list[int], list[float]]:
    lengths = sorted(set(config.lengths))
    depths = sorted(set(config.depths))
    if lengths[0] < 1:
        raise UserError(f"scoring.lengths must be positive token counts, got {lengths[0]}")
    if depths[0] < 0 or depths[-1] > 1:
        raise UserError(f"scoring.depths must lie in [0, 1], got {config.depths}")
    return lengths, depths


def recall_lengths(config: ScoringConfig) -> list[int]:
    """``recall_lengths`` when set, else the largest of ``lengths`` (the hardest, and one context)."""
    return sorted(set(config.recall_lengths)) if config.recall_lengths else [max(config.lengths)]


def haystack_lengths(config: ScoringConfig) -> list[int]:
    """The lengths the RULER-style needle and recall suites will build (not LongAlign's needle)."""
    used = list(config.lengths) if "ruler-needle" in config.suites else []
    return used + (recall_lengths(config) if "recall" in config.suites else [])


def needle_grid(config: ScoringConfig, window: int | None) -> tuple[list[int], list[float]]:
    """LongAlign's needle lengths and depths: the configured ones, else the reference grid with the
    lengths capped where a prompt plus the answer still fit the model's ``window``."""
    room = window - max(config.max_new_tokens, NEEDLE_ANSWER_TOKENS) if window else None
    grid_lengths, grid_depths = longalign_grid(room)
    lengths = sorted(set(config.needle_lengths)) if config.needle_lengths else grid_lengths
    depths = sorted(set(config.needle_depths)) if config.needle_depths else grid_depths
    if lengths[0] < 1 or depths[0] < 0 or depths[-1] > 1:
        raise UserError(f"scoring.needle_lengths must be positive and needle_depths lie in [0, 1], "
                        f"got {lengths} and {depths}")
    return lengths, depths


def haystack_tokens(config: ScoringConfig) -> int:
    """Tokens of haystack text to read: enough for the longest prompt of any offline suite."""
    lengths, _ = _check(config)
    needle = config.needle_lengths or [REFERENCE_LENGTHS[1]]
    return max(haystack_lengths(config) + (list(needle) if "needle" in config.suites else []),
               default=max(lengths))


def build_cases(config: ScoringConfig, tokenizer, source: HaystackSource,
                window: int | None = None) -> list[Case]:
    """All cases of the configured suites, calibrated to ``tokenizer`` (``window``: the model's
    context, which caps LongAlign's default needle grid)."""
    lengths, depths = _check(config)
    wanted = haystack_lengths(config) or list(lengths)
    if "needle" in config.suites:
        needle_lengths, needle_depths = needle_grid(config, window)
        wanted += needle_lengths
    hay = Haystack(source.text, tokenizer, max(wanted))
    cases: list[Case] = []
    if "needle" in config.suites:
        cases += needle_cases(hay, tokenizer, needle_lengths, needle_depths)
    if "ruler-needle" in config.suites:
        cases += ruler_needle_cases(hay, tokenizer, lengths, depths, config.seed)
    if "short" in config.suites:
        cases += short_cases(tokenizer)
    if "recall" in config.suites:
        cases += recall_cases(hay, tokenizer, recall_lengths(config), config.recall_samples, config.seed)
    return cases


def offline_suites(config: ScoringConfig) -> list[str]:
    return [s for s in config.suites if s != LBC]


def score_answerer(config: ScoringConfig, spec: str, tokenizer, answerer: Answerer,
                   source: HaystackSource | None, *, bench: Benchmark | None = None,
                   judge: Endpoint | None = None) -> dict:
    """Score one model through ``answerer``: the offline suites (cases built for ``tokenizer`` from
    ``source``) and, given ``bench`` and ``judge``, LongBench-Chat."""
    start = time.monotonic()
    suites: dict[str, dict] = {}
    if offline_suites(config):
        window = getattr(answerer, "window", None)
        suites.update(evaluate(build_cases(config, tokenizer, source, window), answerer))
        if "needle" in suites and judge is not None:
            judge_needle(suites["needle"], judge)
    if LBC in config.suites and bench is not None and judge is not None:
        suites[LBC] = run_suite(bench, answerer, judge, config.longbench_chat, config.seed)
    seconds = time.monotonic() - start
    for suite, summary in suites.items():
        if "accuracy" in summary:
            log.info("%s %s accuracy %.3f (%d cases)", spec, suite, summary["accuracy"], summary["cases"])
    result = {"spec": spec, "suites": suites, "seconds": round(seconds, 2),
              "truncated_prompts": sum(s.get("truncated", 0) for s in suites.values())}
    client = getattr(answerer, "endpoint", None)
    if client is not None:
        result["answer_usage"] = client.usage.as_dict(client.config)
    return result


def _model_context(spec: str) -> int | None:
    """``max_position_embeddings`` of a local or hub checkpoint's config, if it can be read."""
    try:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(resolve_model(spec)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return None


def check_fits(config: ScoringConfig, label: str, spec: str, source: HaystackSource) -> None:
    """Before any weights load: the suites' cases can be built for ``spec``'s tokenizer (each
    length holds at least its prompt), and the longest haystack plus the answer budget fits the
    model's window. Either failure is a one-line UserError naming the option to change."""
    endpoint = config.endpoint if label == "model" else config.base_endpoint
    window = endpoint.context if endpoint is not None else None  # longbench_chat.context is not a window
    if window is None and endpoint is None:
        window = _model_context(spec)
    used = haystack_lengths(config)
    longest = max(used, default=0)
    from_ruler = "ruler-needle" in config.suites and longest in config.lengths
    key = "scoring.recall_lengths" if config.recall_lengths and not from_ruler else "scoring.lengths"
    if window is not None and used and longest + config.max_new_tokens > window:
        raise UserError(f"{key}: the longest haystack ({longest} tokens) plus "
                        f"scoring.max_new_tokens ({config.max_new_tokens}) exceeds the {window}-token "
                        f"window of {spec}; lower {key}")
    build_cases(config, load_tokenizer(spec), source, window)


def _answerer(config: ScoringConfig, label: str, spec: str, tokenizer) -> Answerer:
    endpoint = config.endpoint if label == "model" else config.base_endpoint
    if endpoint is not None:  # its own ``context`` wins over the checkpoint's window
        log.info("answering with %s at %s", endpoint.model, endpoint.base_url)
        return OpenAIAnswerer(endpoint, tokenizer, config.max_new_tokens, context=_model_context(spec),
                              what="scoring.endpoint" if label == "model" else "scoring.base_endpoint")
    placement = inference_placement(config.cpu_bf16, f"scoring {label}")
    return TransformersAnswerer(load_model(spec, dtype=placement.dtype, device=placement.device,
                                           gpus=placement.gpus), tokenizer, config.max_new_tokens)


def _score_one(config: ScoringConfig, label: str, spec: str, source: HaystackSource | None,
               bench: Benchmark | None, judge: Endpoint | None) -> dict:
    import torch

    torch.manual_seed(config.seed)
    start = time.monotonic()
    tokenizer = load_tokenizer(spec)
    answerer = _answerer(config, label, spec, tokenizer)
    result = score_answerer(config, spec, tokenizer, answerer, source, bench=bench, judge=judge)
    result["seconds"] = round(time.monotonic() - start, 2)
    model = getattr(answerer, "model", None)
    if model is not None:  # a local model: the dtype and device it answered in
        result["dtype"] = str(model.dtype).removeprefix("torch.")
        result["device"] = model.device.type
    client = getattr(answerer, "endpoint", None)
    if client is not None:  # answers that failed after retries count as wrong; too many fail the run
        result["answer_failures"] = _failures(client)
    return result


def _failures(client: Endpoint, kept: str = "") -> dict:
    """The failure rule of longalign.endpoints for one endpoint; logs loudly when some failed."""
    report = check_failures(client.usage, client.config, role=client.role, host=client.host, what=client.what,
                            kept=kept)
    if report["partial"]:
        log.warning("scoring: %d of %d %s requests to %s failed after retries (%s)%s", report["failed"],
                    report["attempted"], client.role, client.host, reasons_text(report["reasons"]),
                    "; PARTIAL RESULTS kept because allow_partial is set" if report["over_limit"] else "")
    return report


def write_outputs(out: Path, config: ScoringConfig, results: dict[str, dict], haystack: dict,
                  seconds: float, *, comparison: dict | None = None, extra: dict | None = None,
                  output: Path | None = None) -> StageResult:
    """Write scores.json, stats.json, result.json, needle.png (with needle results), report.html
    and report.md into ``out`` (which becomes ``output``, default ``out``); return the result. ``comparison`` is a baseline comparison (baseline.compare);
    ``extra`` more facts for stats and scores (LongBench-Chat data and judge usage)."""
    flat = metrics(results)
    if comparison:
        flat.update(baseline_metrics(comparison))
    headline = headline_metrics(results, flat)
    stats = {
        "metrics": flat,
        "headline": headline,
        "models": {label: {"spec": r["spec"], "seconds": r["seconds"],
                           "truncated_prompts": r["truncated_prompts"],
                           "cases": {s: v["cases"] for s, v in r["suites"].items()},
                           **({"answer_usage": r["answer_usage"]} if "answer_usage" in r else {})}
                   for label, r in results.items()},
        "haystack": haystack,
        "recall_lengths": recall_lengths(config) if "recall" in config.suites else [],
        "seconds": round(seconds, 2),
        **(extra or {}),
    }
    if comparison:
        stats["baseline"] = {k: comparison[k] for k in ("path", "spec", "suites", "config_changes")}
    contaminated = {e["suite"] for e in (stats.get("contamination") or {}).get("shared", [])}
    stats["verdict"] = verdict(references(results, comparison), contaminated)
    log.info("%s", stats["verdict"]["line"])
    stats["without_signal"] = without_signal(results)
    for entry in stats["without_signal"]:
        log.warning("no signal: %s", entry["line"])
    write_json(out / "scores.json", {"config": config.model_dump(), "models": results, "haystack": haystack,
                                     "baseline": comparison, **(extra or {})})
    result = StageResult("scoring", Path(output or out), stats, metrics=numeric(flat),
                         headline=headline, summary="report.md", report="report.html")
    result.write(out)
    pngs = {suite: png for suite in GRID_SUITES if (png := heatmap_png(results, suite))}
    for suite, png in pngs.items():
        (out / f"{suite}.png").write_bytes(png)
    write_html(out / "report.html", results, stats, pngs, comparison)
    write_markdown(out / "report.md", results, flat, comparison, stats.get("contamination"),
                   stats["verdict"]["line"], stats["without_signal"])
    return result


def score(config: ScoringConfig, model: str | os.PathLike, output: str | os.PathLike, *,
          base_model: str | None = None, corpus: str | os.PathLike | None = None,
          baseline: str | os.PathLike | None = None, overwrite: bool = False) -> StageResult:
    """Score ``model`` (and ``base_model`` when ``config.compare_base``) and write the output directory.

    ``model`` is a model spec or a fine-tuned checkpoint directory; ``corpus`` an optional sourcing
    output whose texts become the haystack (default: Python standard-library sources); ``baseline``
    (default ``config.baseline``) a previous scores.json or scoring output to compare with. Writes
    scores.json, stats.json, result.json, needle.png, report.html and report.md; returns the
    StageResult.
    """
    start = time.monotonic()
    _check(config)  # bad lengths or depths fail before any work
    specs = {"model": str(model)}
    if config.compare_base and base_model:
        specs["base"] = str(base_model)
    if isinstance(model, os.PathLike):  # a path object is always meant as a checkpoint directory
        require_dir(model, "model directory")
    for spec in specs.values():  # a missing directory or unknown spec fails before any work
        resolve_model(spec)
    for what, endpoint in (("scoring.endpoint", config.endpoint), ("scoring.base_endpoint", config.base_endpoint)):
        if endpoint is not None:
            read_api_key(endpoint.api_key_file, endpoint.api_key_env, what)  # a missing key fails before any work
    contamination = guard(list(config.suites), str(model), config.contamination)
    baseline = baseline or config.baseline
    previous = load_baseline(baseline) if baseline else None
    bench = load_benchmark(config.longbench_chat) if LBC in config.suites else None
    judged = bench or ("needle" in config.suites and config.longbench_chat.judge is not None)
    judge = judge_endpoint(config.longbench_chat) if judged else None
    source = load_source(corpus, haystack_tokens(config)) if offline_suites(config) else None
    if source is not None:
        for label, spec in specs.items():
            check_fits(config, label, spec, source)
    with atomic_dir(output, overwrite=overwrite) as tmp:
        results: dict[str, dict] = {}
        failures: dict[str, dict] = {}
        for label, spec in specs.items():
            if label == "base" and spec == specs["model"] and config.base_endpoint is None:
                results[label] = results["model"]
                continue
            log.info("scoring %s (%s)", label, spec)
            results[label] = _score_one(config, label, spec, source, bench, judge)
            if judge is not None:  # unjudged questions are never silently left out of a mean
                failures["judge"] = _failures(judge, str(judge.journal_path))
            if "answer_failures" in results[label]:
                failures[f"answerer:{label}"] = results[label]["answer_failures"]
        extra: dict = {"contamination": contamination, "endpoint_failures": failures or None,
                       "endpoint_partial": any(f["partial"] for f in failures.values())}
        if bench:
            extra["longbench_chat"] = bench.info
        if judge:
            extra["judge_usage"] = judge.usage.as_dict(judge.config)
        comparison = compare(results["model"], config.model_dump(), previous) if previous else None
        result = write_outputs(tmp, config, results, source.info if source else {},
                               time.monotonic() - start, comparison=comparison, extra=extra,
                               output=Path(output))
    return result
