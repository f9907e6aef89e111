"""The stage commands (``source``, ``generate``, ``pack``, ``train``, ``score``), each the library
function its KFP component calls, on local paths; and ``run``, the whole DAG through kfp.local."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from longalign.cli.app import (
    ConfigOpt, OutputOpt, OverwriteOpt, PresetOpt, SetOpt, _config, _flag, _report, app,
)


@app.command()
def source(
    output: OutputOpt,
    sources: Annotated[Optional[list[str]], _flag("sources", "--source")] = None,
    base_model: Annotated[Optional[str], _flag("base_model", "--base-model")] = None,
    min_tokens: Annotated[Optional[int], _flag("min_tokens", "--min-tokens")] = None,
    max_tokens: Annotated[Optional[int], _flag("max_tokens", "--max-tokens")] = None,
    max_documents: Annotated[Optional[int], _flag("max_documents", "--max-documents")] = None,
    seed: Annotated[Optional[int], _flag("seed", "--seed")] = None,
    strict: Annotated[Optional[bool], _flag("strict", "--strict/--no-strict")] = None,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Source long texts: read, clean, deduplicate, length-filter."""
    cfg = _config(preset, config, set_, "sourcing", {
        "sources": sources or None, "min_tokens": min_tokens, "max_tokens": max_tokens,
        "max_documents": max_documents, "seed": seed, "strict": strict, "base_model": base_model})
    from longalign.sourcing import source as run

    _report(run(cfg.sourcing, cfg.base_model, output, overwrite=overwrite))


@app.command()
def generate(
    corpus: Annotated[Path, typer.Option("--corpus", help="The sourcing stage's output directory.")],
    output: OutputOpt,
    teacher: Annotated[Optional[str], _flag("teacher", "--teacher")] = None,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate long instruction data (Self-Instruct over the corpus)."""
    cfg = _config(preset, config, set_, "generation", {"teacher": teacher})
    from longalign.generation import generate as run

    _report(run(cfg.generation, corpus, output, overwrite=overwrite))


@app.command()
def pack(
    chats: Annotated[Path, typer.Option("--chats", help="The generation stage's output directory.")],
    output: OutputOpt,
    strategy: Annotated[Optional[str], _flag("strategy", "--strategy")] = None,
    max_len: Annotated[Optional[int], _flag("max_len", "--max-len")] = None,
    truncation: Annotated[Optional[str], _flag("truncation", "--truncation")] = None,
    base_model: Annotated[Optional[str], _flag("base_model", "--base-model")] = None,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Tokenise and pack chats into Arrow rows."""
    cfg = _config(preset, config, set_, "packing", {
        "strategy": strategy, "max_len": max_len, "truncation": truncation, "base_model": base_model})
    from longalign.packing import pack as run

    _report(run(cfg.packing, cfg.base_model, chats, output, overwrite=overwrite))


@app.command()
def train(
    packed: Annotated[Path, typer.Option("--packed", help="The packing stage's output directory.")],
    output: OutputOpt,
    base_model: Annotated[Optional[str], _flag("base_model", "--base-model")] = None,
    loss: Annotated[Optional[str], _flag("loss", "--loss")] = None,
    resume: Annotated[bool, _flag("resume", "--resume")] = False,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune the base model on packed rows (run under torchrun for several processes)."""
    cfg = _config(preset, config, set_, "training",
                  {"loss": loss, "base_model": base_model, "resume": resume or None})
    import os

    from longalign.training import train as run
    from longalign.training.checkpoint import EXIT_CODE, Preempted
    from longalign.training.distributed import shutdown

    try:
        result = run(cfg.training, cfg.base_model, packed, output, overwrite=overwrite)
    except Preempted as exc:
        shutdown()
        print(f"{exc}; rerun with --resume", file=sys.stderr)
        raise typer.Exit(code=EXIT_CODE) from None
    shutdown()
    if os.environ.get("RANK", "0") == "0":
        _report(result)


@app.command()
def score(
    model: Annotated[str, typer.Option("--model", help="Fine-tuned checkpoint directory or model spec.")],
    output: OutputOpt,
    base_model: Annotated[Optional[str], _flag("base_model", "--base-model")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Corpus directory used as haystack.")] = None,
    suite: Annotated[Optional[str], _flag("suites", "--suite", metavar="A,B")] = None,
    baseline: Annotated[Optional[Path], _flag("baseline", "--baseline")] = None,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score a model on the long-context suites (LongBench-Chat needs a judge endpoint in the config)."""
    suites = [s.strip() for s in suite.split(",") if s.strip()] if suite else None
    cfg = _config(preset, config, set_, "scoring",
                  {"suites": suites, "baseline": str(baseline) if baseline else None})
    from longalign.scoring import score as run

    _report(run(cfg.scoring, model, output, base_model=base_model, corpus=corpus, overwrite=overwrite))


@app.command()
def run(
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    root: Annotated[Path, typer.Option(help="Where kfp.local keeps runs and its cache.")] = Path("local_outputs"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task even if cached.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Also show kfp.local's and the stages' own output live (always in the run log).")] = False,
    pipeline: Annotated[str, typer.Option(
        "--pipeline", help="longalign, or longalign-extend (context extension first).")] = "longalign",
) -> None:
    """Run the whole DAG on this machine (kfp.local), cached between runs."""
    import time

    from longalign.orchestrate import OUTPUT_STAGE, run_local
    from longalign.orchestrate.transcript import Transcript

    cfg = _config(preset, config, set_)
    log_path = root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    transcript = Transcript(log_path.resolve(), verbose=verbose)
    typer.echo(f"running the {preset} preset through kfp.local under {root}; log: {log_path}")
    summary = run_local(cfg, root, enable_caching=not no_cache, transcript=transcript,
                        pipeline=pipeline)
    base = Path(summary["root"])
    order = list(OUTPUT_STAGE)
    times = ", ".join(f"{s['stage']} {s['seconds']:.0f} s" + (" (cached)" if s["status"] == "cached" else "")
                      for s in summary.get("stages", []))
    lines = [f"finished in {summary['seconds']:.0f} s: {times}", f"artifacts (under {root}):"]
    for name, path in sorted(summary["outputs"].items(),
                             key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
        relative = Path(path).relative_to(base) if Path(path).is_relative_to(base) else Path(path)
        lines.append(f"  {name:<8} {relative}")
    scores = summary.get("scores", {})
    if scores:
        lines.append("scores: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in sorted(scores.items())))
    report = Path(summary["outputs"]["scores"]) / "report.html"
    lines.append(f"report: {report.relative_to(base) if report.is_relative_to(base) else report}")
    if summary.get("verdict"):
        lines.append(summary["verdict"])
    if "promotion" in summary:
        lines.append(summary["promotion"]["message"])
    typer.echo("\n".join(lines))
