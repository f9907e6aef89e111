"""Running the whole DAG: locally through kfp.local, or compiled and sent to a KFP endpoint.

This module sits at the top of the import chain (library <- components <- pipelines <- here).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from longalign.config import STAGES, RunConfig
from longalign.errors import UserError
from longalign.results import StageResult

if TYPE_CHECKING:
    from longalign.orchestrate.transcript import Transcript

log = logging.getLogger("longalign")

DEFAULT_PIPELINE_YAML = Path("pipelines") / "pipeline.yaml"
TOKEN_ENV = "LONGALIGN_KFP_TOKEN"
TOKEN_FILE_ENV = "LONGALIGN_KFP_TOKEN_FILE"

# Which pipeline output belongs to which stage (for the summary table).
OUTPUT_STAGE = {
    "corpus": "sourcing",
    "text_packed": "text packing",
    "extended": "pretrain",
    "chats": "generation",
    "packed": "packing",
    "model": "training",
    "scores": "scoring",
    "report": "scoring",
    "metrics": "scoring",
    "decision": "promotion",
}


def pipeline_arguments(config: RunConfig) -> dict[str, Any]:
    """The pipeline's parameters for a RunConfig (one JSON object per stage section)."""
    data = config.model_dump(mode="json", exclude_none=True)
    args: dict[str, Any] = {"base_model": data["base_model"]}
    for stage in STAGES:
        args[f"{stage}_config"] = data[stage]
    args["promotion_config"] = data["promotion"]
    # longalign-extend's extra tasks (the other pipelines do not declare these parameters)
    args["text_packing_config"] = data["extend"]["packing"]
    args["pretrain_config"] = data["extend"]["training"]
    return args


# pipeline parameter -> config section it holds, where the two names differ
PARAMETER_SECTION = {"text_packing_config": "packing", "pretrain_config": "training"}


def _declared_only(arguments: dict[str, Any], declared) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k in declared}


def _pipeline(name: str):
    from longalign.pipelines import PIPELINES

    if name not in PIPELINES:
        raise UserError(f"unknown pipeline {name!r}; pipelines are {', '.join(PIPELINES)}")
    return PIPELINES[name]


def compile_pipeline(output: str | os.PathLike = DEFAULT_PIPELINE_YAML, *,
                     pipeline: str = "longalign") -> Path:
    """Compile a pipeline (``longalign`` or ``longalign-multinode``) to KFP IR YAML (what the KFP
    UI uploads)."""
    return _compile(_pipeline(pipeline), Path(output))


def _compile(function: Any, output: Path) -> Path:
    """Compile to ``output`` atomically, headed by a comment naming the code compiled (version and
    source digest, longalign/codeid.py); the same code always gives the same bytes."""
    from kfp import compiler

    from longalign.codeid import code_digest, image_tag

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.yaml")
    compiler.Compiler().compile(function, str(tmp))
    header = (f"# Compiled by longalign {image_tag()} from sources with code digest "
              f"{code_digest()} (longalign/codeid.py).\n")
    tmp.write_text(header + _stable_comments(tmp.read_text()))
    os.replace(tmp, output)
    return output


_DEFAULT_COMMENT = re.compile(r"^(#\s+\S+: \w+ \[Default: )(.*)(\])$")


def _stable_comments(text: str) -> str:
    """KFP's comment header lists dict defaults in protobuf map order, which changes from one
    process to the next; print them with sorted keys so two compiles give identical bytes."""
    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value)}
        return [ordered(v) for v in value] if isinstance(value, list) else value

    lines = []
    for line in text.split("\n"):
        match = _DEFAULT_COMMENT.match(line)
        if match and match.group(2)[:1] in "{[":
            try:
                line = f"{match.group(1)}{ordered(ast.literal_eval(match.group(2)))!r}{match.group(3)}"
            except (ValueError, SyntaxError):
                pass
        lines.append(line)
    return "\n".join(lines)


def compile_components(directory: str | os.PathLike = "components") -> list[Path]:
    """Compile every component to ``DIR/<folder>/<file>`` (``<stage>/component.yaml`` for the stages,
    ``training/launcher.yaml`` for the multi-node launcher), for reuse in other pipelines."""
    from longalign.components.registry import COMPONENTS

    written = []
    for folder, filename, component in COMPONENTS.values():
        written.append(_compile(component, Path(directory) / folder / filename))
    return written


def local_promotion(config: RunConfig, root: str | os.PathLike):
    """The promotion section of a local run: a local index without a folder of its own is kept in
    ``<root>/registry``, next to the runs and their cache."""
    promotion = config.promotion
    if promotion.registry == "local" and promotion.index_dir is None:
        promotion = promotion.model_copy(update={"index_dir": str(Path(root).resolve() / "registry")})
    return promotion


def run_local(config: RunConfig, root: str | os.PathLike = "local_outputs", *,
              enable_caching: bool = True, transcript: "Transcript | None" = None,
              pipeline: str = "longalign") -> dict[str, Any]:
    """Run the whole DAG on this machine (kfp.local, subprocesses of this interpreter):
    ``longalign`` or ``longalign-extend`` (the multi-node variant needs a cluster).

    With a ``transcript`` (longalign.transcript), kfp.local's output and the stages' logs go to its
    log file and each stage gets one line. Returns a summary: seconds, run directory, each pipeline
    output's path, the scores, and per stage whether it ran or was cached and how long it took.
    """
    from kfp import local

    if pipeline == "longalign-multinode":
        raise UserError("longalign-multinode submits a Kubeflow Trainer job: it needs a cluster "
                        "(longalign submit); run longalign or longalign-extend locally")
    if pipeline in ("longalign-sharded-packing", "longalign-sharded-data"):
        raise UserError(f"{pipeline} is for a cluster (compile it and upload it); locally, "
                        "sourcing.workers and packing.workers use every core")
    function = _pipeline(pipeline)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"promotion": local_promotion(config, root)})
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=enable_caching,
    )
    start = time.monotonic()
    with warnings.catch_warnings(), (transcript.capture() if transcript else contextlib.nullcontext()):
        # kfp.local warns that the (cluster) base image is not used locally: expected here.
        warnings.filterwarnings("ignore", message=".*base image.*")
        # ...nor the cluster settings (GPUs; kfp-kubernetes settings are ignored silently).
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            declared = function.component_spec.inputs or {}
            task = function(**_declared_only(pipeline_arguments(config), declared))
            failure = None
        except RuntimeError as exc:  # kfp.local: "Task 'x' finished with status FAILURE"
            failure = str(exc)
    if failure is not None:
        where = f"its log: {transcript.log_path}" if transcript else "the task logs above"
        reason = task_error(transcript.log_path) if transcript else None
        raise UserError(f"local pipeline run failed: {reason or failure}; {where}") from None
    seconds = time.monotonic() - start
    outputs = {name: artifact.path for name, artifact in task.outputs.items()}
    summary: dict[str, Any] = {"seconds": round(seconds, 1), "root": str(root), "outputs": outputs}
    if transcript:
        summary["stages"] = [{"stage": r.stage, "status": r.status, "seconds": round(r.seconds, 1),
                              "headline": r.headline} for r in transcript.stages]
    result = StageResult.load(outputs["scores"])
    summary["scores"] = result.headline
    summary["verdict"] = (result.get("verdict") or {}).get("line")
    decision = Path(outputs.get("decision", "")) / "decision.json"
    if decision.is_file():
        summary["promotion"] = json.loads(decision.read_text())
    return summary


def task_error(log_path: Path) -> str | None:
    """The last user error a failed task wrote to the run log (its UserError's message), if any."""
    import re

    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"(?:longalign\.errors\.)?UserError: (.+)", text)
    return found[-1].strip() if found else None


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
    gpu_count=2, pvc_name=team-data) checked against the compiled pipeline's parameters."""
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
        if name == "launcher_config":
            from longalign.training.launcher import parse_launcher_config

            parse_launcher_config(value)
        elif name.endswith("_config"):
            from longalign.config import parse_section

            parse_section(PARAMETER_SECTION.get(name, name.removesuffix("_config")),
                          value)  # same checks as --set
        arguments[name] = value
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


def export_components(directory: str | os.PathLike) -> list[Path]:
    """Write each component for reuse by platform teams: ``DIR/<name>/component.yaml`` (the five
    stages and ``training_launcher``), its README and ``metadata.json`` (image, inputs/outputs,
    versions, checksum), plus ``DIR/index.json``. Returns every file written."""
    import hashlib
    import shutil

    import kfp
    import yaml

    from longalign import __version__
    from longalign.codeid import code_digest
    from longalign.components.registry import COMPONENTS

    directory = Path(directory)
    written, index = [], []
    with tempfile.TemporaryDirectory() as scratch:
        compiled = compile_components(scratch)
        for source, (name, (folder, _, component)) in zip(compiled, COMPONENTS.items()):
            path = directory / name / "component.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
            spec = yaml.safe_load(path.read_text())
            (definition,) = spec["components"].values()
            (executor,) = spec["deploymentSpec"]["executors"].values()
            metadata = {
                "name": name,
                "description": (component.description or "").split("\n\n")[0].strip(),
                "config_section": folder,
                "longalign_version": __version__,
                "code_digest": code_digest(),
                "kfp_version": kfp.__version__,
                "image": executor["container"]["image"],
                "inputs": _interface(definition.get("inputDefinitions", {})),
                "outputs": _interface(definition.get("outputDefinitions", {})),
                "component_yaml_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            (path.parent / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            readme = path.parent / "README.md"
            source_readme = Path(component.python_func.__code__.co_filename).parent / "README.md"
            if source_readme.resolve() != readme.resolve():
                shutil.copyfile(source_readme, readme)
            written += [path, readme, path.parent / "metadata.json"]
            index.append({"name": name, "component": f"{name}/component.yaml", "image": metadata["image"],
                          "sha256": metadata["component_yaml_sha256"]})
    (directory / "index.json").write_text(json.dumps(
        {"longalign_version": __version__, "code_digest": code_digest(), "components": index},
        indent=2) + "\n")
    return written + [directory / "index.json"]


def _interface(definitions: dict[str, Any]) -> dict[str, str]:
    """Name -> KFP type of a component's parameters and artifacts."""
    out = {name: p["parameterType"] for name, p in definitions.get("parameters", {}).items()}
    out.update({name: a["artifactType"]["schemaTitle"] for name, a in definitions.get("artifacts", {}).items()})
    return out
