"""Job manifests: a Kubeflow Trainer v2 TrainJob or a Training Operator v1 PyTorchJob.

Both run ``longalign train`` on every node with data and checkpoints on one shared
ReadWriteMany PVC. Shapes follow the CRDs' Go types: TrainJob from kubeflow/trainer
``pkg/apis/trainer/v1alpha1/trainjob_types.go`` (``runtimeRef``, ``trainer``,
``runtimePatches``, as in the ``kubeflow`` 0.5.0 SDK's ``kubeflow_trainer_api`` models), and
PyTorchJob from kubeflow/training-operator release-1.9 ``pkg/apis/kubeflow.org/v1``
(``pytorchReplicaSpecs`` Master/Worker, container ``pytorch``, ``runPolicy``).

Secrets appear only as ``secretKeyRef`` references, never as values.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from longalign.training.launcher.config import LauncherConfig

TRAINER_GROUP = "trainer.kubeflow.org"
HOSTFILE = "/etc/mpi/hostfile"  # written by the Trainer's MPI plugin on the launcher
PATCH_MANAGER = "longalign.io/training-launcher"
# The names k8s/runtime's longalign-deepspeed runtime uses: the Trainer (v2.3) merges runtime
# patches strategically (volumes by name, mounts by path), so identical entries merge instead of
# clashing as two mounts of one path.
DATA_VOLUME = "data"
SHM_VOLUME = "dshm"
RUN_ID_ANNOTATION = "longalign.io/run-id"


@dataclass(frozen=True)
class JobKind:
    """Where a kind of job lives in the API and how its pods are found."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


KINDS = {
    "trainjob": JobKind("TrainJob", TRAINER_GROUP, "v1alpha1", "trainjobs"),
    "pytorchjob": JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"),
}


@dataclass(frozen=True)
class RunPaths:
    """The run's directory on the shared volume (as mounted in every pod)."""

    root: str

    @property
    def packed(self) -> str:
        return f"{self.root}/packed"

    @property
    def model(self) -> str:
        return f"{self.root}/model"

    @property
    def manifest(self) -> str:
        return f"{self.root}/job.yaml"


def run_paths(config: LauncherConfig, name: str) -> RunPaths:
    """``<mount_path>/runs/<job name>``: one directory per run, named like its job."""
    return RunPaths(posixpath.join(config.mount_path, "runs", name))


def train_args(training: dict[str, Any], base_model: str, paths: RunPaths) -> list[str]:
    """Arguments of ``longalign train``: paths on the volume and every training field.

    Each field of the ``training`` section is passed as ``--set training.KEY=JSON`` so the job
    trains with exactly the configuration the pipeline was given, whatever the preset says.
    ``resume`` is always on: the checkpoints live in this run's own directory on the volume, so a
    job re-created for the same run (a retried launcher task after a failure or preemption)
    continues from the newest one, and a first job finds none and starts fresh.
    """
    if "resume" in training:
        training = {**training, "resume": True}
    args = ["train", "--packed", paths.packed, "--output", paths.model, "--base-model", base_model]
    for key in sorted(training):
        args += ["--set", f"training.{key}={json.dumps(training[key])}"]
    return args


def env_names(config: LauncherConfig) -> list[str]:
    return sorted({*default_env(config), *config.env, *config.env_from_secrets})


def train_command(config: LauncherConfig, args: list[str]) -> list[str]:
    """torchrun (which reads the PET_* rendezvous variables the operators inject), or mpirun
    over the MPI runtime's hostfile with each rank's torch.distributed variables set by
    ``longalign.training.launcher.rank_env``."""
    if not config.uses_mpi:
        return ["torchrun", "-m", "longalign.cli", *args]
    forward = [flag for name in ["PATH", *env_names(config)] for flag in ("-x", name)]
    return ["mpirun", "--hostfile", HOSTFILE, *forward,
            "python", "-m", "longalign.training.launcher.rank_env", "--hostfile", HOSTFILE, "--",
            "python", "-m", "longalign.cli", *args]


def default_env(config: LauncherConfig) -> dict[str, str]:
    # The hub cache on the shared volume: a hub model downloads once for every node.
    return {"PYTHONUNBUFFERED": "1", "HF_HOME": f"{config.mount_path}/cache/huggingface"}


def container_env(config: LauncherConfig) -> list[dict[str, Any]]:
    plain = {**default_env(config), **config.env}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    for name, ref in sorted(config.env_from_secrets.items()):
        secret, key = ref.split("/", 1)
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def resources(config: LauncherConfig) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if config.gpus_per_node:
        limits[config.gpu_resource] = str(config.gpus_per_node)
    if config.cpu:
        limits["cpu"] = config.cpu
    if config.memory:
        limits["memory"] = config.memory
    out: dict[str, Any] = {"limits": limits} if limits else {}
    requests = {k: v for k, v in limits.items() if k != config.gpu_resource}
    if requests:
        out["requests"] = requests
    return out


def volumes(config: LauncherConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod volumes and the container mounts: the shared PVC and, optionally, /dev/shm."""
    vols = [{"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": config.pvc}}]
    mounts = [{"name": DATA_VOLUME, "mountPath": config.mount_path}]
    if config.shm_size:
        vols.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory",
                                                      "sizeLimit": config.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return vols, mounts


def _metadata(name: str, namespace: str, run_id: str,
              owner: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "longalign",
                   "app.kubernetes.io/component": "training"},
        "annotations": {RUN_ID_ANNOTATION: run_id},
    }
    if owner:
        # Not a controller reference and no blockOwnerDeletion (which would need update rights
        # on pods/finalizers): deleting the launcher pod lets the garbage collector delete the job.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["name"],
                                    "uid": owner["uid"]}]
    return meta


def _scheduling(config: LauncherConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return spec


def build_trainjob(config: LauncherConfig, *, name: str, namespace: str, run_id: str,
                   image: str, command: list[str],
                   owner: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``trainer.kubeflow.org/v1alpha1`` TrainJob on a (Cluster)TrainingRuntime.

    Image, command, node count, processes and resources per node and env go in ``spec.trainer``;
    volumes, mounts and scheduling go in a ``runtimePatches`` entry owned by this launcher,
    applied to the runtime's ``node`` replicated job (and ``launcher`` for MPI runtimes).
    """
    vols, mounts = volumes(config)
    trainer: dict[str, Any] = {
        "image": image, "command": command, "numNodes": config.num_nodes,
        "numProcPerNode": config.procs, "env": container_env(config),
    }
    if resources(config):
        trainer["resourcesPerNode"] = resources(config)
    pod_spec = {"volumes": vols, "containers": [{"name": "node", "volumeMounts": mounts}],
                **_scheduling(config)}
    jobs = ["launcher", "node"] if config.uses_mpi else ["node"]
    patch = {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": job, "template": {"spec": {"template": {"spec": pod_spec}}}}
            for job in jobs]}}},
    }
    return {
        "apiVersion": KINDS["trainjob"].api_version,
        "kind": "TrainJob",
        "metadata": _metadata(name, namespace, run_id, owner),
        "spec": {
            "runtimeRef": {"name": config.runtime, "apiGroup": TRAINER_GROUP,
                           "kind": config.runtime_kind},
            "trainer": trainer,
            "runtimePatches": [patch],
            "activeDeadlineSeconds": config.timeout_seconds,
        },
    }


def build_pytorchjob(config: LauncherConfig, *, name: str, namespace: str, run_id: str,
                     image: str, command: list[str],
                     owner: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob: one Master and ``num_nodes - 1`` Workers.

    Pods never restart in place and the job has no retries (``backoffLimit: 0``): a failure
    surfaces at once and retrying is the pipeline's decision. Pods are kept for their logs.
    """
    vols, mounts = volumes(config)
    container: dict[str, Any] = {"name": "pytorch", "image": image, "command": command,
                                 "env": container_env(config), "volumeMounts": mounts}
    if resources(config):
        container["resources"] = resources(config)
    template = {"spec": {"containers": [container], "volumes": vols, **_scheduling(config)}}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if config.num_nodes > 1:
        replicas["Worker"] = {"replicas": config.num_nodes - 1, "restartPolicy": "Never",
                              "template": template}
    return {
        "apiVersion": KINDS["pytorchjob"].api_version,
        "kind": "PyTorchJob",
        "metadata": _metadata(name, namespace, run_id, owner),
        "spec": {
            "nprocPerNode": str(config.procs),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 0,
                          "activeDeadlineSeconds": config.timeout_seconds},
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_manifest(config: LauncherConfig, *, name: str, namespace: str, run_id: str,
                   image: str, training: dict[str, Any], base_model: str,
                   owner: dict[str, str] | None = None) -> dict[str, Any]:
    """The job for ``config.kind`` training ``base_model`` with the ``training`` section;
    ``owner`` (the launcher pod's name and uid) becomes its owner reference."""
    command = train_command(config, train_args(training, base_model, run_paths(config, name)))
    build = build_trainjob if config.kind == "trainjob" else build_pytorchjob
    return build(config, name=name, namespace=namespace, run_id=run_id, image=image,
                 command=command, owner=owner)


def main_pod_selector(config: LauncherConfig, name: str) -> tuple[str, str]:
    """Label selector of the rank-0 pod (whose logs are streamed) and its container name.

    TrainJob pods carry the JobSet labels (the JobSet is named like the TrainJob); node ranks
    are the indexed Job's completion index; MPI runtimes print from the launcher pod.
    PyTorchJob pods carry the Training Operator's ``training.kubeflow.org/*`` labels.
    """
    if config.kind == "pytorchjob":
        return (f"training.kubeflow.org/job-name={name},"
                "training.kubeflow.org/replica-type=master,"
                "training.kubeflow.org/replica-index=0", "pytorch")
    if config.uses_mpi:
        return (f"jobset.sigs.k8s.io/jobset-name={name},"
                "jobset.sigs.k8s.io/replicatedjob-name=launcher", "node")
    return (f"jobset.sigs.k8s.io/jobset-name={name},"
            "jobset.sigs.k8s.io/replicatedjob-name=node,"
            "batch.kubernetes.io/job-completion-index=0", "node")
