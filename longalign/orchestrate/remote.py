"""Runs on a Kubeflow Pipelines endpoint: one run now (``submit``) or a recurring retrain
(``schedule``), with the bearer token from the environment or a mounted file."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from longalign.config import RunConfig
from longalign.errors import UserError
from longalign.orchestrate import PARAMETER_SECTION, _declared_only, _pipeline, pipeline_arguments
from longalign.orchestrate.compiling import compile_pipeline

log = logging.getLogger("longalign")

TOKEN_ENV = "LONGALIGN_KFP_TOKEN"
TOKEN_FILE_ENV = "LONGALIGN_KFP_TOKEN_FILE"


def _token() -> str | None:
    """The bearer token for multi-user Kubeflow: $LONGALIGN_KFP_TOKEN, else the file named by
    $LONGALIGN_KFP_TOKEN_FILE (a mounted secret). Never a command-line argument, never logged."""
    token = os.environ.get(TOKEN_ENV)
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if not token and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read ${TOKEN_FILE_ENV} ({token_file}): {exc.strerror}") from None
    return token or None


def _client(host: str):
    """A kfp.Client for ``host``, authenticated with the bearer token from :func:`_token`."""
    import kfp

    token = _token()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return kfp.Client(host=host, existing_token=token)
    except Exception as exc:  # kfp raises many types for an unreachable or wrong host
        reason = "connection refused" if "refused" in str(exc) else type(exc).__name__
        raise UserError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None


@contextmanager
def _compiled_package(pipeline: str) -> Iterator[Path]:
    """The pipeline compiled into a temporary folder, removed when the block ends."""
    _pipeline(pipeline)  # an unknown name is a user error before anything is written or sent
    with tempfile.TemporaryDirectory(prefix="longalign-") as directory:
        yield compile_pipeline(Path(directory) / "pipeline.yaml", pipeline=pipeline)


_PARAM_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float), "BOOLEAN": bool,
                "STRUCT": dict, "LIST": list}


def run_arguments(config: RunConfig, package: str | os.PathLike,
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's pipeline arguments: the stage configs from ``config``, then ``params`` (e.g.
    gpu_count=2, pvc_name=team-data) checked against the compiled pipeline's parameters. GPUs for
    the generation and scoring pods (``inference_gpu_count`` > 0) bring the CUDA image with them
    unless ``inference_image`` is given too."""
    import yaml

    spec = next(yaml.safe_load_all(Path(package).read_text()))  # 2nd document: the platform spec
    declared = spec["root"]["inputDefinitions"]["parameters"]
    arguments = _declared_only(pipeline_arguments(config), declared)
    if "launcher_config" in declared:  # the multi-node pipeline: the run config's launcher section
        arguments["launcher_config"] = config.launcher.model_dump(mode="json", exclude_unset=True)
    for name, value in (params or {}).items():
        if name not in declared:
            raise UserError(f"--param {name}: not a pipeline parameter (known: {', '.join(sorted(declared))})")
        kind = declared[name]["parameterType"]
        expected = _PARAM_TYPES.get(kind, object)
        if isinstance(value, bool) and kind != "BOOLEAN" or not isinstance(value, expected):
            raise UserError(f"--param {name}: expected {kind.lower()}, got {value!r}")
        if name.endswith("gpu_count") and value < 0:  # a negative limit: the pod would be refused
            raise UserError(f"--param {name}: expected 0 or more GPUs, got {value}")
        if name == "launcher_config":
            from longalign.training.launcher import parse_launcher_config

            parse_launcher_config(value)
        elif name.endswith("_config"):
            from longalign.config import parse_section

            parse_section(PARAMETER_SECTION.get(name, name.removesuffix("_config")),
                          value)  # same checks as --set
        arguments[name] = value
    if (params or {}).get("inference_gpu_count", 0) > 0 and "inference_image" not in (params or {}):
        # GPUs for the generation and scoring pods need an image whose torch can use them
        from longalign.components.common import IMAGE_CUDA

        arguments["inference_image"] = IMAGE_CUDA
        log.info("inference_gpu_count=%s: the generation and scoring pods run %s",
                 params["inference_gpu_count"], IMAGE_CUDA)
    return arguments


def submit(host: str, config: RunConfig, *, experiment: str = "longalign", run_name: str | None = None,
           params: dict[str, Any] | None = None, enable_caching: bool | None = None,
           namespace: str | None = None, service_account: str | None = None,
           pipeline: str = "longalign") -> str:
    """Compile the pipeline and start one run on a KFP endpoint; returns the run id.

    ``enable_caching=None`` keeps each task's compiled caching setting (see pipelines/platform.py);
    False re-runs every task.
    """
    with _compiled_package(pipeline) as package:
        arguments = run_arguments(config, package, params)
        client = _client(host)
        try:
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=run_name or f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}",
                experiment_name=experiment,
                namespace=namespace,
                enable_caching=enable_caching,
                service_account=service_account,
            )
        except Exception as exc:
            raise UserError(f"submitting the run failed: {_api_error(exc)}") from None
        return result.run_id


def _api_error(exc: Exception) -> str:
    """One line for an API failure (kfp_server_api.ApiException carries status, reason and body)."""
    status = getattr(exc, "status", None)
    if status is not None:
        body = str(getattr(exc, "body", "") or "").replace("\n", " ")[:300]
        return f"HTTP {status} {getattr(exc, 'reason', '')}: {body}".strip()
    return f"{type(exc).__name__}: {exc}"


def _upload_version(client, package: Path, namespace: str | None,
                    pipeline: str = "longalign") -> tuple[str, str]:
    """Upload ``package`` as a new version of the pipeline named ``pipeline`` (creating it the first
    time); returns (pipeline id, version id)."""
    from longalign import __version__

    pipeline_id = client.get_pipeline_id(pipeline)
    if pipeline_id is None:
        uploaded = client.upload_pipeline(str(package), pipeline_name=pipeline, namespace=namespace)
        versions = client.list_pipeline_versions(uploaded.pipeline_id, sort_by="created_at desc").pipeline_versions
        return uploaded.pipeline_id, versions[0].pipeline_version_id
    version_name = f"{__version__}-{time.strftime('%Y%m%d-%H%M%S')}"
    version = client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                             pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def schedule(host: str, config: RunConfig, *, cron: str, experiment: str = "longalign",
             job_name: str = "longalign-retrain", max_concurrency: int = 1,
             params: dict[str, Any] | None = None, namespace: str | None = None,
             service_account: str | None = None, pipeline: str = "longalign") -> str:
    """Upload a new pipeline version and create (or replace) a recurring run of it; returns its id.

    ``cron`` has 6 fields (seconds first) and is in UTC, as KFP expects. Recurring runs cannot be
    edited, so existing ones with the same name in the experiment are deleted first. Missed runs
    are not caught up. Caching follows each task's compiled setting.
    """
    fields = cron.split()
    if len(fields) != 6:
        raise UserError(f"--cron needs 6 fields (seconds minutes hours day month weekday), got {cron!r}")
    with _compiled_package(pipeline) as package:
        arguments = run_arguments(config, package, params)
        client = _client(host)
        try:
            pipeline_id, version_id = _upload_version(client, package, namespace, pipeline)
            experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
            same_name = json.dumps({"predicates": [
                {"operation": "EQUALS", "key": "display_name", "stringValue": job_name}]})
            existing = client.list_recurring_runs(experiment_id=experiment_id, page_size=100, filter=same_name)
            for job in existing.recurring_runs or []:
                if job.display_name == job_name:
                    log.info("replacing recurring run %s (%s)", job_name, job.recurring_run_id)
                    client.delete_recurring_run(job.recurring_run_id)
            job = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=job_name,
                cron_expression=cron,
                max_concurrency=max_concurrency,
                no_catchup=True,
                params=arguments,
                pipeline_id=pipeline_id,
                version_id=version_id,
                service_account=service_account,
            )
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"scheduling failed: {_api_error(exc)}") from None
        return job.recurring_run_id
