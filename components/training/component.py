"""KFP component: the training stage (fine-tune on packed rows with LongAlign's loss weighting).

This component trains inside its own pod (one process). The multi-node launcher (Kubeflow
Trainer TrainJob) is a separate component with caching off.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from longalign.components.common import IMAGE_CUDA


@dsl.component(base_image=IMAGE_CUDA, install_kfp_package=False)
def training(
    config: dict,
    base_model: str,
    packed: Input[Dataset],
    model: Output[Model],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    start_model: Input[Model] = None,
):
    """Train a causal LM on packed rows (fine-tuning, or continued pre-training on text rows).

    Args:
        config: the `training` config section (see longalign.config.TrainingConfig).
        base_model: model spec to start from.
        packed: the packing stage's output directory.
        model: output checkpoint directory (safetensors + tokenizer, stats.json, summary.md).
        start_model: optional; a previous training task's model to start from instead of
            base_model (longalign-extend: fine-tuning starts from the extended model).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.training import train
    from longalign.training.distributed import shutdown

    start = start_model.path if start_model is not None else base_model
    result = train(parse_section("training", config), start, packed.path, model.path)
    shutdown()  # a process group (FSDP2's group of one) is not left to the interpreter's exit
    publish(result, metrics, summary)
