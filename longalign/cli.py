"""The ``longalign`` command line: one subcommand per stage, plus the whole DAG.

Every stage subcommand runs the same library function the KFP component calls, on local paths.
Configuration comes from one loader (``longalign.config.load_run_config``): a preset, an optional
config file (YAML/JSON, sections named after the stages), ``--set section.key=value`` overrides and
the command's flags, in that order. Each flag is a config key (``FLAG_KEYS``) and its help text is
that key's description.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from longalign.config import PRESETS, RunConfig, describe, load_run_config
from longalign.errors import UserError
from longalign.results import StageResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="LongAlign long-context alignment as a Kubeflow Pipelines DAG.",
)
log = logging.getLogger("longalign")

# CLI flag (the command's parameter name) -> config key. The flag's value goes straight into the
# loader (no JSON round trip) and its help text is the key's description.
FLAG_KEYS = {
    "sources": "sourcing.sources",
    "min_tokens": "sourcing.min_tokens",
    "max_tokens": "sourcing.max_tokens",
    "max_documents": "sourcing.max_documents",
    "seed": "sourcing.seed",
    "strict": "sourcing.strict",
    "teacher": "generation.teacher",
    "strategy": "packing.strategy",
    "max_len": "packing.max_len",
    "truncation": "packing.truncation",
    "loss": "training.loss",
    "resume": "training.resume",
    "suites": "scoring.suites",
    "baseline": "scoring.baseline",
    "base_model": "base_model",
}


def _flag(name: str, *decls: str, **kwargs: Any) -> Any:
    """The typer option of a config flag, documented by the key's description."""
    from rich.markup import escape

    return typer.Option(*decls, help=escape(describe(FLAG_KEYS[name])), **kwargs)


PresetOpt = Annotated[str, typer.Option(
    "--preset", help=f"Base configuration: {' or '.join(PRESETS)} (longalign/config/presets/).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON file with config sections.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override, e.g. --set training.epochs=1 (in a stage command the section may be omitted).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).")]


def _config(preset: str, config_file: Optional[Path], sets: Optional[list[str]],
            section: str | None = None, flags: dict[str, Any] | None = None) -> RunConfig:
    """The run config: ``--set`` items without a section name go to ``section``; ``flags`` are
    parameter name -> value (None: not given), placed at their ``FLAG_KEYS`` key."""
    overrides = []
    for item in sets or []:
        key = item.split("=", 1)[0]
        head = key.split(".", 1)[0]
        if section and head not in RunConfig.model_fields:  # e.g. api.base_url in `generate`
            item = f"{section}.{item}"
        overrides.append(item)
    values = {FLAG_KEYS[name]: value for name, value in (flags or {}).items()}
    return load_run_config(preset, overrides=overrides, files=[config_file] if config_file else None,
                           values=values)


def _report(result: StageResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"wrote {result.output}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console(stderr=False).print(table)


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

    try:
        result = run(cfg.training, cfg.base_model, packed, output, overwrite=overwrite)
    except Preempted as exc:
        print(f"{exc}; rerun with --resume", file=sys.stderr)
        raise typer.Exit(code=EXIT_CODE) from None
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


PipelineOpt = Annotated[str, typer.Option(
    "--pipeline", help="longalign (training in one pod), longalign-multinode (Kubeflow Trainer job), "
    "longalign-extend (context extension first), longalign-sharded-packing (packing stored "
    "chats over many pods) or longalign-sharded-data (sourcing and text packing over many pods); "
    "the sharded ones compile only.")]


@app.command()
def launch(
    run_id: Annotated[str, typer.Option("--run-id", help="The run id the job is named after (a KFP run id).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print, as YAML, every object the launcher would create; contact no cluster.")] = False,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """The multi-node training job of a run: the multi-node pipeline's launcher_config defaults
    updated by a `launcher` section (--config FILE, --set launcher.KEY=VALUE), built by the same
    code as the pipeline's launcher task."""
    if not dry_run:
        raise UserError("launch only supports --dry-run; the multi-node pipeline's training task submits the job")
    from longalign.components.common import IMAGE, IMAGE_CUDA
    from longalign.pipelines.pipeline import LAUNCHER_DEFAULTS
    from longalign.training.launcher.run import plan_from_config

    plan = plan_from_config(run_id, preset, [config] if config else [], set_ or [], default_image=IMAGE,
                            default_gpu_image=IMAGE_CUDA, launcher_defaults=LAUNCHER_DEFAULTS)
    typer.echo(plan.yaml(), nl=False)


@app.command(name="compile")
def compile_(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("pipelines/pipeline.yaml"),
    components_dir: Annotated[Optional[Path], typer.Option(
        help="Also write each stage component's YAML to DIR/<stage>/component.yaml.")] = None,
    pipeline: PipelineOpt = "longalign",
) -> None:
    """Write the pipeline as KFP IR YAML (upload it in the KFP UI)."""
    from longalign.orchestrate import compile_components, compile_pipeline

    typer.echo(f"wrote {compile_pipeline(output, pipeline=pipeline)}")
    for path in compile_components(components_dir) if components_dir else []:
        typer.echo(f"wrote {path}")


ParamOpt = Annotated[Optional[list[str]], typer.Option(
    "--param", help="Pipeline parameter for this run, e.g. --param gpu_count=2 --param pvc_name=team-data "
    "(value parsed as JSON when it parses).")]
NamespaceOpt = Annotated[Optional[str], typer.Option(
    help="Kubeflow profile namespace (multi-user Kubeflow); default: the client's context.")]
ServiceAccountOpt = Annotated[Optional[str], typer.Option(
    help="Service account the run's pods use, e.g. longalign-pipeline-runner; default: KFP's.")]


def _params(items: Optional[list[str]]) -> dict[str, Any]:
    from longalign.config import parse_value

    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param {item!r}: expected NAME=VALUE")
        params[key.strip()] = parse_value(value)
    return params


@app.command()
def submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")],
    experiment: Annotated[str, typer.Option()] = "longalign",
    run_name: Annotated[Optional[str], typer.Option()] = None,
    param: ParamOpt = None, namespace: NamespaceOpt = None, service_account: ServiceAccountOpt = None,
    pipeline: PipelineOpt = "longalign",
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Run every task (default: each task's compiled caching setting).")] = False,
) -> None:
    """Start one pipeline run on a KFP endpoint (token from $LONGALIGN_KFP_TOKEN[_FILE])."""
    from longalign.orchestrate import submit as do_submit

    run_id = do_submit(host, _config(preset, config, set_), experiment=experiment, run_name=run_name,
                       params=_params(param), enable_caching=False if no_cache else None,
                       namespace=namespace, service_account=service_account, pipeline=pipeline)
    typer.echo(f"submitted run {run_id}")


@app.command()
def schedule(
    host: Annotated[str, typer.Option(help="KFP API endpoint.")],
    cron: Annotated[str, typer.Option(help='6-field cron in UTC, e.g. "0 0 3 * * 0" (Sundays 03:00).')],
    max_concurrency: Annotated[int, typer.Option(min=1)] = 1,
    experiment: Annotated[str, typer.Option()] = "longalign",
    name: Annotated[str, typer.Option(help="Recurring run name (replaced if it exists).")] = "longalign-retrain",
    param: ParamOpt = None, namespace: NamespaceOpt = None, service_account: ServiceAccountOpt = None,
    pipeline: PipelineOpt = "longalign",
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Upload a new pipeline version and create or replace a recurring retrain."""
    from longalign.orchestrate import schedule as do_schedule

    job_id = do_schedule(host, _config(preset, config, set_), cron=cron, experiment=experiment,
                         job_name=name, max_concurrency=max_concurrency, params=_params(param),
                         namespace=namespace, service_account=service_account, pipeline=pipeline)
    typer.echo(f"scheduled recurring run {job_id}")


components_app = typer.Typer(no_args_is_help=True, help="Reusable stage components for other pipelines.")
app.add_typer(components_app, name="components")


@components_app.command("export")
def components_export(
    directory: Annotated[Path, typer.Argument(help="Where to write <stage>/component.yaml, README, metadata.")],
) -> None:
    """Compile each stage component to its own YAML, with its README and metadata.json."""
    from longalign.orchestrate import export_components

    for path in export_components(directory):
        typer.echo(f"wrote {path}")


@app.command()
def models(
    action: Annotated[str, typer.Argument(help="list, archive (roll back) or restore")],
    version: Annotated[Optional[str], typer.Argument(help="the version to archive or restore, e.g. v3")] = None,
    preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
    root: Annotated[Path, typer.Option(help="The root of `longalign run`: its local index is ROOT/registry "
                                            "unless promotion.index_dir is set.")] = Path("local_outputs"),
) -> None:
    """Promoted model versions in the promotion section's registry (local index or Model Registry)."""
    from longalign.orchestrate import local_promotion
    from longalign.promotion.versions import models_command

    typer.echo(models_command(local_promotion(_config(preset, config, set_, "promotion"), root), action, version))


def _setup_logging() -> None:
    from rich.logging import RichHandler

    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(show_path=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


INTERRUPTED = "interrupted: nothing was written (unfinished outputs are removed)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def error_line(message: object) -> str:
    """One ``error:`` line: the first line of ``message`` without terminal colour codes."""
    text = ANSI.sub("", str(message)).strip()
    first = text.splitlines()[0] if text else "failed"
    return f"error: {first}"


def _os_error(exc: OSError) -> str:
    """``PATH: reason`` for an OSError (``A -> B: reason`` for a rename)."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = (exc.strerror or type(exc).__name__).lower()
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason += " (a file is where a folder is needed)"
    return f"{where}: {reason}" if where else f"{reason}: {exc}"


def _interrupted() -> None:
    from longalign.io import remove_unfinished

    remove_unfinished()
    print(INTERRUPTED, file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: user mistakes become one line on stderr and exit code 2 (usage errors: click's).

    An OSError that reaches here is a location the user named (an output under a file, a folder
    without write permission, a missing input): one line naming the path, exit 2. Ctrl-C exits 130
    with one line; stage outputs are written through a temporary folder, so nothing is left half
    written.
    """
    _setup_logging()
    try:
        app(args=argv)
    except UserError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(error_line(_os_error(exc)), file=sys.stderr)
        return 2
    except MemoryError:
        print(error_line("out of memory (lower the sizes in the config, e.g. packing.max_len)"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _interrupted()
        return 130
    except SystemExit as exc:  # typer turns Ctrl-C into exit code 130 without a word
        if exc.code == 130:
            _interrupted()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
