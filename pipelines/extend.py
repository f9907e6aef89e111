"""longalign-extend: context extension before alignment (ProLong's continued pre-training), then
the LongAlign recipe on the extended model.

sourcing -> text packing -> pretrain -> generation -> chat packing -> fine-tuning -> scoring

The same components as ``longalign``, with parameters: the packing component packs the sourcing
corpus as plain text (``text_packing_config``: format text), the training component continues
pre-training with the pretrain objective and a larger RoPE base (``pretrain_config``), and a
second training task fine-tunes the extended model (its ``start_model`` input) on the chats.
Scoring compares the result with the original base model, so lengths beyond the base model's
window show what extension and alignment gave. Every task is cached, as in ``longalign``.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Model

from longalign.components.common import IMAGE
from longalign.components.registry import generation, packing, scoring, sourcing, training
from longalign.pipelines import platform
from longalign.pipelines.pipeline import DEFAULTS

EXTEND_PIPELINE_NAME = "longalign-extend"


class ExtendOutputs(NamedTuple):
    corpus: Dataset
    text_packed: Dataset
    extended: Model
    chats: Dataset
    packed: Dataset
    model: Model
    scores: Dataset
    report: HTML
    metrics: Metrics


@dsl.pipeline(name=EXTEND_PIPELINE_NAME,
              description="Context extension then alignment: source long texts (ProLong's mix), "
              "pack them as plain text, continue pre-training with a larger RoPE base, generate "
              "instructions, pack, fine-tune with LongAlign loss weighting, score against the "
              "base model.")
def longalign_extend_pipeline(
    base_model: str = DEFAULTS["base_model"],
    sourcing_config: dict = DEFAULTS["sourcing"],
    text_packing_config: dict = DEFAULTS["extend"]["packing"],
    pretrain_config: dict = DEFAULTS["extend"]["training"],
    generation_config: dict = DEFAULTS["generation"],
    packing_config: dict = DEFAULTS["packing"],
    training_config: dict = DEFAULTS["training"],
    scoring_config: dict = DEFAULTS["scoring"],
    pvc_name: str = platform.PVC_NAME,
    api_key_secret: str = platform.API_KEY_SECRET,
    gpu_type: str = platform.GPU_TYPE,
    gpu_count: int = platform.GPU_COUNT,
    gpu_node_selector: dict = {},
    gpu_tolerations: list = [],
    inference_image: str = IMAGE,
    inference_gpu_type: str = platform.GPU_TYPE,
    inference_gpu_count: int = platform.INFERENCE_GPU_COUNT,
    inference_tolerations: list = [],
) -> ExtendOutputs:
    """Extension then alignment, training in one pod per training task. `base_model` is the base model
    spec; `text_packing_config` and `pretrain_config` are the `extend` section's packing and
    training parts (docs/extend.md); the other parameters as in `longalign`."""

    def gpu(task, stage):
        platform.stage_pod(task, "training", pvc_name=pvc_name)
        return platform.gpu_pod(task.set_display_name(stage), gpu_type=gpu_type,
                                gpu_count=gpu_count, node_selector=gpu_node_selector,
                                tolerations=gpu_tolerations)

    source_task = sourcing(config=sourcing_config, base_model=base_model).set_display_name("sourcing")
    corpus = source_task.outputs["corpus"]
    text_task = packing(config=text_packing_config, base_model=base_model,
                        chats=corpus).set_display_name("text packing")
    pretrain_task = gpu(training(config=pretrain_config, base_model=base_model,
                                 packed=text_task.outputs["packed"]), "pretrain")
    extended = pretrain_task.outputs["model"]
    generate_task = generation(config=generation_config, corpus=corpus).set_display_name("generation")
    pack_task = packing(config=packing_config, base_model=base_model,
                        chats=generate_task.outputs["chats"]).set_display_name("chat packing")
    tune_task = gpu(training(config=training_config, base_model=base_model, start_model=extended,
                             packed=pack_task.outputs["packed"]), "fine-tuning")
    score_task = scoring(config=scoring_config, base_model=base_model, model=tune_task.outputs["model"],
                         corpus=corpus).set_display_name("scoring")
    for task, stage in ((source_task, "sourcing"), (text_task, "packing"),
                        (generate_task, "generation"), (pack_task, "packing"),
                        (score_task, "scoring")):
        platform.stage_pod(task, stage, pvc_name=pvc_name, api_key_secret=api_key_secret)
    for task in (generate_task, score_task):
        platform.inference_pod(task, image=inference_image, gpu_type=inference_gpu_type,
                               gpu_count=inference_gpu_count, tolerations=inference_tolerations)
    return ExtendOutputs(
        corpus=corpus, text_packed=text_task.outputs["packed"], extended=extended,
        chats=generate_task.outputs["chats"], packed=pack_task.outputs["packed"],
        model=tune_task.outputs["model"], scores=score_task.outputs["scores"],
        report=score_task.outputs["report"], metrics=score_task.outputs["metrics"])
