"""Local runs: the whole DAG on this machine through kfp.local."""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longalign.config import RunConfig
from longalign.errors import UserError
from longalign.orchestrate import _declared_only, _pipeline, pipeline_arguments
from longalign.results import StageResult

if TYPE_CHECKING:
    from longalign.orchestrate.transcript import Transcript


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
