"""The LongAlign DAG: sourcing -> generation -> packing -> training -> scoring, in two variants.

- ``longalign`` trains inside the training task's own pod (one node; what ``longalign run`` executes
  locally through kfp.local, and enough for small models on one GPU node);
- ``longalign-multinode`` replaces that task with the Trainer launcher: a Kubeflow Trainer TrainJob
  (or a Training Operator PyTorchJob) over several GPU nodes, with data and checkpoints on the shared
  volume. Its launcher task is never cached: its effects live on the cluster and the volume.

The two are separate pipelines rather than one with a ``dsl.If``: scoring needs the model from
whichever branch ran (``dsl.OneOf``), which kfp.local cannot execute, and a compile-time choice keeps
each DAG's graph in the UI simple. Both compile to committed YAML (pipeline.yaml and
pipeline-multinode.yaml).

Each stage takes its config section as one JSON parameter (editable per run in the KFP UI) and
passes typed artifacts to the next. Every task is cached: all stages are deterministic for their
inputs and seeds, and the image tag carries the package version so a code change changes the key.
Kubernetes settings (volume, secrets, GPUs, placement, timeouts, retries) come from
``platform.py``; the ones a UI user changes per run are pipeline parameters below.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Model

from longalign.components.common import IMAGE
from longalign.components.registry import (
    fingerprint, generation, packing, promotion, scoring, sourcing, training,
)
from longalign.components.training.launcher import training_launcher
from longalign.config import PRESETS, RunConfig
from longalign.pipelines import platform

PIPELINE_NAME = "longalign"
MULTINODE_PIPELINE_NAME = "longalign-multinode"
# Launcher defaults for the multi-node variant, shown in the KFP UI as what the run does: the
# launcher section the default preset sets (longalign/config/presets/default.yaml).
DESCRIPTION = ("LongAlign long-context alignment: source long texts, generate instructions, pack, "
               "fine-tune with LongAlign loss weighting, score.")
DEFAULTS = RunConfig.model_validate(PRESETS["default"]).model_dump(mode="json", exclude_none=True)
LAUNCHER_DEFAULTS = RunConfig.model_validate(PRESETS["default"]).launcher.model_dump(
    mode="json", exclude_unset=True)


class Outputs(NamedTuple):
    corpus: Dataset
    chats: Dataset
    packed: Dataset
    model: Model
    scores: Dataset
    report: HTML
    metrics: Metrics
    decision: Dataset


def _recipe(train, inference, *, base_model, sourcing_config, generation_config, packing_config,
            scoring_config, promotion_config, pvc_name, api_key_secret) -> Outputs:
    """The five stages; ``train(packed)`` adds the training task and returns it (its ``model``
    output feeds scoring); ``inference(task)`` places the generation and scoring tasks (their image
    and GPUs). Platform settings per stage come from platform.py."""
    # Uncached: its output parameter is part of the sourcing task's cache key, so sourcing and
    # everything after it re-run exactly when the data changed (new files, commits, revisions).
    fingerprint_task = fingerprint(config=sourcing_config).set_display_name("fingerprint")
    source_task = sourcing(
        config=sourcing_config, base_model=base_model,
        data_fingerprint=fingerprint_task.outputs["fingerprint"],
    ).set_display_name("sourcing")
    generate_task = generation(
        config=generation_config, corpus=source_task.outputs["corpus"]
    ).set_display_name("generation")
    pack_task = packing(
        config=packing_config, base_model=base_model, chats=generate_task.outputs["chats"]
    ).set_display_name("packing")
    train_task = train(pack_task.outputs["packed"]).set_display_name("training")
    score_task = scoring(
        config=scoring_config,
        base_model=base_model,
        model=train_task.outputs["model"],
        corpus=source_task.outputs["corpus"],
    ).set_display_name("scoring")
    # Last and uncached: compares with the last promoted version and registers the model when
    # the gate passes (the registry's state is not part of any cache key).
    promote_task = promotion(
        config=promotion_config,
        base_model=base_model,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        model=train_task.outputs["model"],
        scores=score_task.outputs["scores"],
        corpus=source_task.outputs["corpus"],
    ).set_display_name("promotion")
    for stage, task in {"fingerprint": fingerprint_task, "sourcing": source_task,
                        "generation": generate_task, "packing": pack_task, "scoring": score_task,
                        "promotion": promote_task}.items():
        platform.stage_pod(task, stage, pvc_name=pvc_name, api_key_secret=api_key_secret)
    for task in (generate_task, score_task):
        inference(task)
    return Outputs(
        corpus=source_task.outputs["corpus"],
        chats=generate_task.outputs["chats"],
        packed=pack_task.outputs["packed"],
        model=train_task.outputs["model"],
        scores=score_task.outputs["scores"],
        report=score_task.outputs["report"],
        metrics=score_task.outputs["metrics"],
        decision=promote_task.outputs["decision"],
    )


@dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
def longalign_pipeline(
    base_model: str = DEFAULTS["base_model"],
    sourcing_config: dict = DEFAULTS["sourcing"],
    generation_config: dict = DEFAULTS["generation"],
    packing_config: dict = DEFAULTS["packing"],
    training_config: dict = DEFAULTS["training"],
    scoring_config: dict = DEFAULTS["scoring"],
    promotion_config: dict = DEFAULTS["promotion"],
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
) -> Outputs:
    """The whole recipe, training in one pod; `base_model` is the model to fine-tune, each `*_config` one
    stage's config section (`promotion_config`: the gate and the registry of the last step).

    On Kubernetes: `pvc_name` is the shared ReadWriteMany volume, `api_key_secret` the Secret with the
    teacher/judge API keys, and `gpu_*` place the training pod (e.g. node selector
    {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, tolerations
    [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]). `inference_*` place
    the generation and scoring pods, which run the local teacher and the scoring models: no GPU by
    default; with `inference_gpu_count` 1, set `inference_image` to the longalign-cuda image.
    """

    def train(packed):
        task = training(config=training_config, base_model=base_model, packed=packed)
        platform.stage_pod(task, "training", pvc_name=pvc_name)
        return platform.gpu_pod(task, gpu_type=gpu_type, gpu_count=gpu_count,
                                node_selector=gpu_node_selector, tolerations=gpu_tolerations)

    def inference(task):
        return platform.inference_pod(task, image=inference_image, gpu_type=inference_gpu_type,
                                      gpu_count=inference_gpu_count, tolerations=inference_tolerations)

    return _recipe(train, inference, base_model=base_model, sourcing_config=sourcing_config,
                   generation_config=generation_config, packing_config=packing_config,
                   scoring_config=scoring_config, promotion_config=promotion_config,
                   pvc_name=pvc_name, api_key_secret=api_key_secret)


@dsl.pipeline(name=MULTINODE_PIPELINE_NAME, description=DESCRIPTION + " Training runs as a "
              "Kubeflow Trainer TrainJob (or PyTorchJob) over several GPU nodes.")
def longalign_multinode_pipeline(
    base_model: str = DEFAULTS["base_model"],
    sourcing_config: dict = DEFAULTS["sourcing"],
    generation_config: dict = DEFAULTS["generation"],
    packing_config: dict = DEFAULTS["packing"],
    training_config: dict = DEFAULTS["training"],
    scoring_config: dict = DEFAULTS["scoring"],
    promotion_config: dict = DEFAULTS["promotion"],
    launcher_config: dict = LAUNCHER_DEFAULTS,
    pvc_name: str = platform.PVC_NAME,
    api_key_secret: str = platform.API_KEY_SECRET,
    inference_image: str = IMAGE,
    inference_gpu_type: str = platform.GPU_TYPE,
    inference_gpu_count: int = platform.INFERENCE_GPU_COUNT,
    inference_tolerations: list = [],
) -> Outputs:
    """The whole recipe with multi-node training; parameters as in `longalign`, plus
    `launcher_config` (job kind trainjob|pytorchjob, runtime, num_nodes, gpus_per_node,
    gpu_resource, node_selector, tolerations, namespace, timeouts, ...; see docs/launcher.md):
    the job's GPUs and placement are set there and nowhere else (`inference_*` place the
    generation and scoring pods, as in `longalign`). The model output points at the
    checkpoint on the shared volume, where scoring reads it."""

    def train(packed):
        task = training_launcher(
            config=training_config, launcher_config=launcher_config, base_model=base_model,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, packed=packed, pvc_name=pvc_name)
        return platform.launcher_pod(task, pvc_name=pvc_name)

    def inference(task):
        return platform.inference_pod(task, image=inference_image, gpu_type=inference_gpu_type,
                                      gpu_count=inference_gpu_count, tolerations=inference_tolerations)

    return _recipe(train, inference, base_model=base_model, sourcing_config=sourcing_config,
                   generation_config=generation_config, packing_config=packing_config,
                   scoring_config=scoring_config, promotion_config=promotion_config,
                   pvc_name=pvc_name, api_key_secret=api_key_secret)


PIPELINES = {PIPELINE_NAME: longalign_pipeline, MULTINODE_PIPELINE_NAME: longalign_multinode_pipeline}
