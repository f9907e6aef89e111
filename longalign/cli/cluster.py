"""The cluster commands: ``launch --dry-run`` (the multi-node training job), ``compile``,
``submit`` and ``schedule`` (KFP API), ``components export`` and ``models`` (promoted versions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from longalign.cli.app import ConfigOpt, PipelineOpt, PresetOpt, SetOpt, _config, app
from longalign.errors import UserError


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
    parallelism: Annotated[Optional[int], typer.Option(
        help="The sharded pipelines: pods at a time per ParallelFor (default 8; 0: no limit). "
        "KFP fixes it at compile time; the number of parts is the run parameter `parts`.")] = None,
) -> None:
    """Write the pipeline as KFP IR YAML (upload it in the KFP UI)."""
    from longalign.orchestrate import compile_components, compile_pipeline

    typer.echo(f"wrote {compile_pipeline(output, pipeline=pipeline, parallelism=parallelism)}")
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
