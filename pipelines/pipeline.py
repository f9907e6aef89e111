"""The LongAlign DAG: sourcing -> generation -> packing -> training -> scoring.

Each stage takes its config section as one JSON parameter (editable per run in the KFP UI) and
passes typed artifacts to the next. Every task is cached: all stages are deterministic for their
inputs and seeds, and the image tag carries the package version so a code change changes the key.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Model

from longalign.components.registry import generation, packing, scoring, sourcing, training
from longalign.config import PRESETS, RunConfig

PIPELINE_NAME = "longalign"
DEFAULTS = RunConfig.model_validate(PRESETS["default"]).model_dump(mode="json", exclude_none=True)


class Outputs(NamedTuple):
    corpus: Dataset
    chats: Dataset
    packed: Dataset
    model: Model
    scores: Dataset
    report: HTML
    metrics: Metrics


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="LongAlign long-context alignment: source long texts, generate instructions, pack, "
    "fine-tune with LongAlign loss weighting, score.",
)
def longalign_pipeline(
    model: str = DEFAULTS["model"],
    sourcing_config: dict = DEFAULTS["sourcing"],
    generation_config: dict = DEFAULTS["generation"],
    packing_config: dict = DEFAULTS["packing"],
    training_config: dict = DEFAULTS["training"],
    scoring_config: dict = DEFAULTS["scoring"],
) -> Outputs:
    """The whole recipe; `model` is the base model spec, each `*_config` one stage's config section."""
    source_task = sourcing(config=sourcing_config, model=model).set_display_name("sourcing")
    generate_task = generation(
        config=generation_config, corpus=source_task.outputs["corpus"]
    ).set_display_name("generation")
    pack_task = packing(
        config=packing_config, model=model, chats=generate_task.outputs["chats"]
    ).set_display_name("packing")
    train_task = training(
        config=training_config, base_model=model, packed=pack_task.outputs["packed"]
    ).set_display_name("training")
    score_task = scoring(
        config=scoring_config,
        base_model=model,
        model=train_task.outputs["model"],
        corpus=source_task.outputs["corpus"],
    ).set_display_name("scoring")
    for task in (source_task, generate_task, pack_task, train_task, score_task):
        task.set_caching_options(enable_caching=True)
    return Outputs(
        corpus=source_task.outputs["corpus"],
        chats=generate_task.outputs["chats"],
        packed=pack_task.outputs["packed"],
        model=train_task.outputs["model"],
        scores=score_task.outputs["scores"],
        report=score_task.outputs["report"],
        metrics=score_task.outputs["metrics"],
    )
