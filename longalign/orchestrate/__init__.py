"""Running the whole DAG: locally through kfp.local, or compiled and sent to a KFP endpoint.

This package sits at the top of the import chain (library <- components <- pipelines <- here):
``compiling`` (pipeline and component YAML, the reusable component export), ``local`` (kfp.local
runs), ``remote`` (runs and recurring runs on a KFP endpoint), ``transcript`` (the run's console
lines). What they share, the pipeline arguments of a run config, is here.
"""

from __future__ import annotations

from typing import Any

from longalign.config import STAGES, RunConfig
from longalign.errors import UserError

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


# the package's interface (imported last: the modules use what is defined above)
from longalign.orchestrate.compiling import (DEFAULT_PIPELINE_YAML, compile_components,  # noqa: E402
                                             compile_pipeline, export_components)
from longalign.orchestrate.local import local_promotion, run_local, task_error  # noqa: E402
from longalign.orchestrate.remote import (TOKEN_ENV, TOKEN_FILE_ENV, run_arguments,  # noqa: E402
                                          schedule, submit)

__all__ = ["OUTPUT_STAGE", "PARAMETER_SECTION", "pipeline_arguments", "DEFAULT_PIPELINE_YAML",
           "compile_components", "compile_pipeline", "export_components", "local_promotion",
           "run_local", "task_error", "TOKEN_ENV", "TOKEN_FILE_ENV", "run_arguments", "schedule",
           "submit"]
