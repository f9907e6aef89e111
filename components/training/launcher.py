"""KFP component: multi-node training as a Kubernetes job (Kubeflow Trainer TrainJob, or a
Training Operator PyTorchJob), launched, watched and checked from a lightweight pod.

Run it with caching off (its effects live on the cluster and the PVC) and with the shared PVC
mounted at ``launcher_config.mount_path``; its service account needs the RBAC in docs/launcher.md.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def training_launcher(
    config: dict,
    launcher_config: dict,
    base_model: str,
    run_id: str,
    packed: Input[Dataset],
    model: Output[Model],
    manifest: Output[Artifact],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    pvc_name: str = "",
):
    """Fine-tune on a cluster: submit the job, stream its logs, fail when it fails.

    Args:
        config: the `training` config section (see longalign.config.TrainingConfig).
        launcher_config: see longalign.training.launcher.LauncherConfig (kind, runtime,
            num_nodes, gpus_per_node, image, pvc, mount_path, namespace, timeout_seconds, ...).
        base_model: model spec to start from.
        run_id: unique per pipeline run (pass dsl.PIPELINE_JOB_ID_PLACEHOLDER); names the job.
        packed: the packing stage's output, copied onto the shared PVC for the job.
        model: points at the checkpoint on the PVC (metadata pvc/path/uri; pointer.json).
        manifest: the submitted job as YAML.
        pvc_name: the pipeline's shared volume (mounted in this pod); when given it is the
            job's volume too, and a different launcher_config.pvc is an error.
    """
    from longalign.components.common import IMAGE, IMAGE_CUDA, publish
    from longalign.training.launcher import launch_training

    given = {"pvc": pvc_name}
    result = launch_training(config, launcher_config, base_model, packed.path, run_id, model.path,
                             manifest.path, default_image=IMAGE, default_gpu_image=IMAGE_CUDA,
                             overrides=given)
    model.metadata.update(result.stats["model_metadata"])
    publish(result, metrics, summary)
