"""Running the whole DAG: locally through kfp.local, or compiled and sent to a KFP endpoint.

This module sits at the top of the import chain (library <- components <- pipelines <- here).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from longalign.config import STAGES, RunConfig
from longalign.errors import UserError

log = logging.getLogger("longalign")

DEFAULT_PIPELINE_YAML = Path("pipelines") / "pipeline.yaml"
TOKEN_ENV = "LONGALIGN_KFP_TOKEN"
TOKEN_FILE_ENV = "LONGALIGN_KFP_TOKEN_FILE"

# Which pipeline output belongs to which stage (for the summary table).
OUTPUT_STAGE = {
    "corpus": "sourcing",
    "chats": "generation",
    "packed": "packing",
    "model": "training",
    "scores": "scoring",
    "report": "scoring",
}


def pipeline_arguments(config: RunConfig) -> dict[str, Any]:
    """The pipeline's parameters for a RunConfig (one JSON object per stage section)."""
    data = config.model_dump(mode="json", exclude_none=True)
    args: dict[str, Any] = {"model": data["model"]}
    for stage in STAGES:
        args[f"{stage}_config"] = data[stage]
    return args


def compile_pipeline(output: str | os.PathLike = DEFAULT_PIPELINE_YAML) -> Path:
    """Compile the pipeline to KFP IR YAML (what the KFP UI uploads)."""
    from kfp import compiler

    from longalign.pipelines import longalign_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.yaml")
    compiler.Compiler().compile(longalign_pipeline, str(tmp))
    os.replace(tmp, output)
    return output


def compile_components(directory: str | os.PathLike = "components") -> list[Path]:
    """Compile each stage component to ``DIR/<stage>/component.yaml`` (for reuse in other pipelines)."""
    from kfp import compiler

    from longalign.components.registry import STAGE_COMPONENTS

    written = []
    for stage, component in STAGE_COMPONENTS.items():
        output = Path(directory) / stage / "component.yaml"
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(".component.tmp.yaml")
        compiler.Compiler().compile(component, str(tmp))
        os.replace(tmp, output)
        written.append(output)
    return written


def run_local(config: RunConfig, root: str | os.PathLike = "local_outputs", *,
              enable_caching: bool = True) -> dict[str, Any]:
    """Run the whole DAG on this machine (kfp.local, subprocesses of this interpreter).

    Returns a summary: seconds, run directory, each pipeline output's path, and the scores.
    """
    from kfp import local

    from longalign.pipelines import longalign_pipeline

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=enable_caching,
    )
    start = time.monotonic()
    with warnings.catch_warnings():
        # kfp.local warns that the (cluster) base image is not used locally: expected here.
        warnings.filterwarnings("ignore", message=".*base image.*")
        try:
            task = longalign_pipeline(**pipeline_arguments(config))
        except RuntimeError as exc:
            raise UserError(f"local pipeline run failed: {exc} (see the task logs above)") from None
    seconds = time.monotonic() - start
    outputs = {name: artifact.path for name, artifact in task.outputs.items()}
    summary: dict[str, Any] = {"seconds": round(seconds, 1), "root": str(root), "outputs": outputs}
    scores_stats = Path(outputs["scores"]) / "stats.json"
    if scores_stats.is_file():
        summary["scores"] = json.loads(scores_stats.read_text()).get("metrics", {})
    return summary


def _client(host: str):
    """A kfp.Client for ``host``; a bearer token comes from $LONGALIGN_KFP_TOKEN or the file named by
    $LONGALIGN_KFP_TOKEN_FILE (never from the command line)."""
    import kfp

    token = os.environ.get(TOKEN_ENV)
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if not token and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read ${TOKEN_FILE_ENV} ({token_file}): {exc.strerror}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return kfp.Client(host=host, existing_token=token or None)
    except Exception as exc:  # kfp raises many types for an unreachable or wrong host
        reason = "connection refused" if "refused" in str(exc) else type(exc).__name__
        raise UserError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None


def _compiled_package() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="longalign-"))
    return compile_pipeline(directory / "pipeline.yaml")


def submit(host: str, config: RunConfig, *, experiment: str = "longalign",
           run_name: str | None = None, enable_caching: bool = True) -> str:
    """Compile the pipeline and start one run on a KFP endpoint; returns the run id."""
    client = _client(host)
    package = _compiled_package()
    try:
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=pipeline_arguments(config),
            run_name=run_name or f"longalign-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=experiment,
            enable_caching=enable_caching,
        )
    except Exception as exc:
        raise UserError(f"submitting the run failed: {type(exc).__name__}: {exc}") from None
    return result.run_id


def schedule(host: str, config: RunConfig, *, cron: str, experiment: str = "longalign",
             job_name: str = "longalign-retrain", max_concurrency: int = 1,
             enable_caching: bool = True) -> str:
    """Upload a new pipeline version and create (or replace) a recurring run; returns its id.

    ``cron`` has 6 fields (seconds first) and is in UTC, as KFP expects. Recurring runs cannot be
    edited, so an existing one with the same name is deleted and created anew.
    """
    fields = cron.split()
    if len(fields) != 6:
        raise UserError(f"--cron needs 6 fields (seconds minutes hours day month weekday), got {cron!r}")
    client = _client(host)
    package = _compiled_package()
    from longalign import __version__
    from longalign.pipelines import PIPELINE_NAME

    version_name = f"{__version__}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(package), pipeline_name=PIPELINE_NAME)
            pipeline_id = pipeline.pipeline_id
            version_id = client.list_pipeline_versions(pipeline_id).pipeline_versions[0].pipeline_version_id
        else:
            version = client.upload_pipeline_version(
                str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id)
            version_id = version.pipeline_version_id
        experiment_id = client.create_experiment(experiment).experiment_id
        existing = client.list_recurring_runs(experiment_id=experiment_id, page_size=100)
        for job in existing.recurring_runs or []:
            if job.display_name == job_name:
                client.delete_recurring_run(job.recurring_run_id)
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=True,
            params=pipeline_arguments(config),
            pipeline_id=pipeline_id,
            version_id=version_id,
            enable_caching=enable_caching,
        )
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"scheduling failed: {type(exc).__name__}: {exc}") from None
    return job.recurring_run_id
