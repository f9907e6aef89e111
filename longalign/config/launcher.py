"""The ``launcher`` section: which Kubernetes job trains on several nodes, how big it is, which
image it runs and where the shared volume is. The multi-node pipeline's ``launcher_config``
parameter; docs/launcher.md explains the job it builds."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from longalign.config.base import DATA_MOUNT, PVC_NAME, Section

# Runtimes whose ml policy is MPI (a launcher pod runs mpirun over ssh); every other runtime is
# driven by torchrun from the PET_* variables the Trainer's torch plugin injects.
MPI_RUNTIMES = ("deepspeed-distributed", "mpi-distributed")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_REF = re.compile(r"^([a-z0-9]([-.a-z0-9]*[a-z0-9])?)/([-._A-Za-z0-9]+)$")
_SECRET_LIKE = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "ACCESS_KEY")
_PATTERNS = {  # field: (pattern, what a value must look like)
    "name_prefix": (r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "must start with a letter and hold only a-z, 0-9 and '-'"),
    "gpu_resource": (r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
                     "must be an extended resource name like nvidia.com/gpu"),
}


class LauncherConfig(Section):
    """How the multi-node training job is built and watched."""

    kind: Literal["trainjob", "pytorchjob"] = Field(
        "trainjob", description="trainjob (Kubeflow Trainer v2) or pytorchjob (Training Operator v1)")
    runtime: str = Field("torch-distributed", description="TrainJob only: the runtime's name, e.g. "
        "longalign-deepspeed (k8s/runtime); deepspeed-distributed and mpi-distributed run through MPI")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime",
        description="TrainJob only: or TrainingRuntime (namespaced, in the job's namespace)")
    num_nodes: int = Field(1, ge=1, description="pods (nodes) of the job")
    gpus_per_node: int = Field(1, ge=0, description="GPU limit per node; 0 for CPU")
    gpu_resource: str = Field(
        "nvidia.com/gpu", description="the extended resource GPUs are requested as (e.g. amd.com/gpu)")
    procs_per_node: int | None = Field(
        None, ge=1, description="training processes per node (null: gpus_per_node, or 1 without GPUs)")
    cpu: str | None = Field(None, description='CPU per node, requests = limits, e.g. "32"')
    memory: str | None = Field(None, description='memory per node, requests = limits, e.g. "512Gi"')
    image: str | None = Field(
        None, description="the image every node runs: must hold longalign and a torch build for the "
        "nodes' GPUs (null: the project's CUDA image with GPUs, its CPU image without, of this version)")
    pvc: str = Field(PVC_NAME, description="ReadWriteMany claim shared by the launcher and every node")
    mount_path: str = Field(DATA_MOUNT, description="where the claim is mounted in every pod")
    namespace: str | None = Field(None, description="namespace of the job (null: the launcher pod's own)")
    timeout_seconds: int = Field(
        71 * 3600, ge=1, description="the launcher gives up (and deletes the job) after this long; "
        "just under the pipeline's 72 h training pod timeout, so this clear error comes first")
    poll_seconds: float = Field(10.0, gt=0, description="seconds between job status checks")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="plain environment variables (names that look like secrets are refused)")
    env_from_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="environment variables set from a Secret (secretKeyRef), NAME: secret-name/key")
    shm_size: str | None = Field("16Gi", description="/dev/shm for NCCL and data loader workers (null: none)")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node selector of the training pods")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations of the training pods")
    service_account: str | None = Field(None, description="service account of the training pods")
    name_prefix: str = Field("longalign", min_length=1, max_length=20,
                             description="job names are <prefix>-<hash of the run id>")
    copy_model: bool = Field(
        False, description="also copy the whole checkpoint into the Model artifact, for consumers that "
        "do not mount the volume")
    stream_logs: bool = Field(True, description="stream the rank-0 pod's log into the launcher's log")
    delete_on_cancel: bool = Field(True, description="delete the job when the launcher gets SIGTERM")
    delete_on_failure: bool = Field(
        False, description="delete a failed job (default: keep it for inspection)")
    start_timeout_seconds: int = Field(
        900, ge=1, description="fail (and delete the job) when none of its pods runs within this "
        "time; the message is the last Warning event (e.g. FailedScheduling)")
    delete_on_success: bool = Field(
        True, description="delete a succeeded job once its rank-0 log is saved on the volume "
        "(runs/<job>/launcher.log)")
    owned_by_launcher_pod: bool = Field(
        True, description="make the launcher pod (LONGALIGN_POD_NAME/UID from the downward API) "
        "the job's owner, so deleting the pod (a run cancel) garbage-collects the job")

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "":
            raise ValueError(f"must be an absolute directory other than /, got {v!r}")
        return v.rstrip("/")

    @field_validator("pvc", "runtime")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 253:
            raise ValueError(f"must be a lower-case DNS name, got {v!r}")
        return v

    @field_validator("name_prefix", "gpu_resource")
    @classmethod
    def _pattern(cls, v: str, info: Any) -> str:
        pattern, rule = _PATTERNS[info.field_name]
        if not re.match(pattern, v):
            raise ValueError(f"{rule}, got {v!r}")
        return v

    @field_validator("env")
    @classmethod
    def _plain_env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
            if any(word in name.upper() for word in _SECRET_LIKE):
                raise ValueError(f"{name} looks like a secret: put it in env_from_secrets "
                                 "as NAME: secret-name/key")
        return v

    @field_validator("env_from_secrets")
    @classmethod
    def _secret_env(cls, v: dict[str, str]) -> dict[str, str]:
        for name, ref in v.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
            if not _SECRET_REF.match(ref):
                raise ValueError(f"{name}: expected 'secret-name/key', got {ref!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "LauncherConfig":
        both = set(self.env) & set(self.env_from_secrets)
        if both:
            raise ValueError(f"set in both env and env_from_secrets: {', '.join(sorted(both))}")
        if self.kind == "pytorchjob" and self.uses_mpi:
            raise ValueError(f"runtime {self.runtime!r} is a TrainJob runtime; a PyTorchJob "
                             "always runs torchrun")
        if self.poll_seconds >= self.timeout_seconds:
            raise ValueError("poll_seconds must be smaller than timeout_seconds")
        return self

    @property
    def uses_mpi(self) -> bool:
        return self.runtime in MPI_RUNTIMES

    @property
    def procs(self) -> int:
        """Training processes per node."""
        return self.procs_per_node or max(self.gpus_per_node, 1)
