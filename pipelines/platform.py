"""Kubernetes settings of the pipeline's tasks (kfp-kubernetes), kept apart from the DAG itself.

What a UI user changes per run is a pipeline parameter (volume and secret names, GPU type and count,
GPU node selector and tolerations, the image and GPUs of the stages with local inference models); what only a platform team changes is a constant here (timeouts,
retries, caching, /dev/shm size). kfp.local ignores everything from kfp-kubernetes (and warns about
accelerators), so the same DAG still runs on a laptop.

The training settings are one function, ``gpu_pod``. In the multi-node pipeline the Trainer
launcher task gets ``launcher_pod`` instead (caching off, no GPU of its own); the job's GPUs and
placement come from its ``launcher_config`` alone, so there is one source of truth for them.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from longalign.config import DATA_MOUNT, PVC_NAME, LauncherConfig  # noqa: F401 (PVC_NAME: a pipeline default)

# Where the shared ReadWriteMany volume (packed data, checkpoints, model caches) is mounted, and its
# claim's default name: defined once in longalign.config (the launcher's pvc and mount_path).
# The images point HF_HOME and LONGALIGN_CACHE below the mount, so model downloads are shared across
# tasks and runs instead of repeated in every pod.

# Defaults of the per-run pipeline parameters (k8s/base creates objects with these names).
API_KEY_SECRET = "longalign-api-keys"
GPU_TYPE = LauncherConfig.model_fields["gpu_resource"].default
GPU_COUNT = 1
INFERENCE_GPU_COUNT = 0  # generation and scoring: CPU pods unless a run asks for GPUs

# Secret keys -> environment variables, per stage. Each pod gets its own key under the variable the
# stage's endpoint config reads by default (`api_key_env: OPENAI_API_KEY` in generation.api and the
# scoring endpoints). Optional: a missing key leaves the variable unset, so runs with the local or
# synthetic teacher need no secret at all.
SECRET_ENV = {
    "generation": {"teacher-api-key": "OPENAI_API_KEY"},
    "scoring": {"judge-api-key": "OPENAI_API_KEY"},
}

# activeDeadlineSeconds per task pod.
HOUR = 3600
TIMEOUT_SECONDS = {
    "fingerprint": 1 * HOUR,  # lists files and commits; hashes jsonl/parquet files
    "sourcing": 6 * HOUR,
    "generation": 24 * HOUR,  # an API or vLLM teacher over many long documents
    "packing": 6 * HOUR,
    "training": 72 * HOUR,
    "scoring": 12 * HOUR,
    "promotion": 1 * HOUR,
}

# Stages that talk to a teacher/judge endpoint or a model hub can fail transiently: retry them
# with exponential backoff. The others fail deterministically; a retry only burns time.
RETRIES = {
    "generation": {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0,
                   "backoff_max_duration": "3600s"},
    "scoring": {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2.0,
                "backoff_max_duration": "3600s"},
}

# Caching per stage. Every in-pod stage is deterministic for its inputs and seeds and writes only KFP
# artifacts (the image tag is the package version, so new code gets new keys): all are cached,
# training included, so a re-run after a scoring change does not retrain. A task whose effect lives
# outside its artifacts (the Trainer launcher: a TrainJob, checkpoints on the volume) is not cached.
# The data fingerprint in front of sourcing is never cached: it is what notices new data.
CACHING = {"fingerprint": False, "sourcing": True, "generation": True, "packing": True, "training": True, "scoring": True,
           # The promotion gate reads and writes the registry, which no cache key covers.
           "promotion": False}
LAUNCHER_CACHING = False

# The sharded pipelines' packing steps keep their sample stores and rows here on the shared volume
# (longalign.packing.spool); their effects live outside their artifacts, so they are not cached.
SHARED_DIR = f"{DATA_MOUNT}/sharded"
VOLUME_CACHING = False

# /dev/shm for the training pod (NCCL and DataLoader workers need more than the default 64 MiB).
SHM_SIZE = "16Gi"


def stage_pod(task: PipelineTask, stage: str, *, pvc_name, api_key_secret=None) -> PipelineTask:
    """Settings every stage task gets: shared volume, timeout, caching, retries and secrets."""
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.set_timeout(task, TIMEOUT_SECONDS[stage])
    task.set_caching_options(enable_caching=CACHING[stage])
    if stage in RETRIES:
        task.set_retry(**RETRIES[stage])
    if stage in SECRET_ENV and api_key_secret is not None:
        kubernetes.use_secret_as_env(task, secret_name=api_key_secret,
                                     secret_key_to_env=SECRET_ENV[stage], optional=True)
    return task


def volume_pod(task: PipelineTask, stage: str, *, pvc_name) -> PipelineTask:
    """Settings of a sharded step that reads or writes the shared volume (``SHARED_DIR``): the
    volume, the stage's timeout, no caching."""
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.set_timeout(task, TIMEOUT_SECONDS[stage])
    task.set_caching_options(enable_caching=VOLUME_CACHING)
    return task


def inference_pod(task: PipelineTask, *, image, gpu_type, gpu_count, tolerations) -> PipelineTask:
    """Settings of a task that may run a local model (the generation stage's local teacher, the
    scoring stage's models): its image and its GPUs, 0 by default (the data image, any node). With
    GPUs, ``image`` should be the CUDA image (``IMAGE_CUDA``), whose torch can use them; the stage
    then loads its local models on the GPU in bf16, spread over several GPUs when it has them
    (longalign/precision.py)."""
    task.set_container_image(image)
    task.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    kubernetes.add_toleration_json(task, tolerations)
    return task


def gpu_pod(task: PipelineTask, *, gpu_type, gpu_count, node_selector, tolerations) -> PipelineTask:
    """GPU settings of a task that trains in its own pod: accelerators, placement and /dev/shm."""
    task.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=SHM_SIZE)
    return task


# The launcher pod's identity from the downward API: the job gets the pod as its owner, so deleting
# the pod (a run cancel) garbage-collects the job (see longalign/training/launcher/run.py).
LAUNCHER_FIELD_ENV = {"LONGALIGN_POD_NAME": "metadata.name", "LONGALIGN_POD_UID": "metadata.uid",
                      "LONGALIGN_POD_NAMESPACE": "metadata.namespace"}


def launcher_pod(task: PipelineTask, *, pvc_name) -> PipelineTask:
    """Settings of the Trainer launcher task: the volume the training job shares, the training
    timeout, no caching, its own pod identity (owner of the job) and the image registry the job's
    default image comes from. Its GPUs are the job's (launcher_config), not its own."""
    from longalign.components.common import REPOSITORY, REPOSITORY_ENV

    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.set_timeout(task, TIMEOUT_SECONDS["training"])
    task.set_caching_options(enable_caching=LAUNCHER_CACHING)
    for env, field_path in LAUNCHER_FIELD_ENV.items():
        kubernetes.use_field_path_as_env(task, env_name=env, field_path=field_path)
    task.set_env_variable(REPOSITORY_ENV, REPOSITORY)
    return task
