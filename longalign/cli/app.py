"""The typer app and what every command shares: the config flags (``FLAG_KEYS``), the common
options, the run-config loader and the metrics table printed after a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from longalign.config import PRESETS, RunConfig, describe, load_run_config
from longalign.results import StageResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="LongAlign long-context alignment as a Kubeflow Pipelines DAG.",
)

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


PipelineOpt = Annotated[str, typer.Option(
    "--pipeline", help="longalign (training in one pod), longalign-multinode (Kubeflow Trainer job), "
    "longalign-extend (context extension first), longalign-sharded-packing (packing stored "
    "chats over many pods) or longalign-sharded-data (sourcing and text packing over many pods); "
    "the sharded ones compile only.")]
