"""The launcher's configuration: which kind of job, how big, which image, where the shared volume is.

One pydantic model with unknown keys forbidden, like every config section. It is the KFP launcher
component's ``launcher_config`` parameter (a JSON object); see docs/launcher.md for every field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from longalign.errors import UserError

# Runtimes whose ml policy is MPI (a launcher pod runs mpirun over ssh); every other runtime is
# driven by torchrun from the PET_* variables the Trainer's torch plugin injects.
MPI_RUNTIMES = ("deepspeed-distributed", "mpi-distributed")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_REF = re.compile(r"^([a-z0-9]([-.a-z0-9]*[a-z0-9])?)/([-._A-Za-z0-9]+)$")
_SECRET_LIKE = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "ACCESS_KEY")


class LauncherConfig(BaseModel):
    """How the multi-node training job is built and watched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["trainjob", "pytorchjob"] = "trainjob"
    runtime: str = "torch-distributed"  # TrainJob only: the (Cluster)TrainingRuntime's name
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    num_nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0)
    gpu_resource: str = "nvidia.com/gpu"  # the extended resource GPUs are requested as
    procs_per_node: int | None = Field(None, ge=1)  # default: gpus_per_node, or 1 without GPUs
    cpu: str | None = None  # per node, e.g. "32"
    memory: str | None = None  # per node, e.g. "512Gi"
    image: str | None = None  # default: the project's image for this version
    pvc: str = "longalign-data"  # ReadWriteMany claim shared by the launcher and every node
    mount_path: str = "/mnt/longalign"
    namespace: str | None = None  # default: the launcher pod's own namespace
    # Just under the pipeline's 72 h training pod timeout, so the launcher's own timeout (clear
    # error, job deleted) fires before the pod is killed.
    timeout_seconds: int = Field(71 * 3600, ge=1)
    poll_seconds: float = Field(10.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)  # plain values (never secrets)
    env_from_secrets: dict[str, str] = Field(default_factory=dict)  # NAME: "secret-name/key"
    shm_size: str | None = "16Gi"  # /dev/shm for NCCL and data loader workers; None: none
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    service_account: str | None = None  # for the training pods
    name_prefix: str = Field("longalign", min_length=1, max_length=20)
    copy_model: bool = False  # also copy the checkpoint into the Model artifact (no PVC needed)
    stream_logs: bool = True
    delete_on_cancel: bool = True  # delete the job when the launcher gets SIGTERM
    delete_on_failure: bool = False  # keep failed jobs for inspection by default
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

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", v):
            raise ValueError(f"must start with a letter and hold only a-z, 0-9 and '-', got {v!r}")
        return v

    @field_validator("gpu_resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", v):
            raise ValueError(f"must be an extended resource name like nvidia.com/gpu, got {v!r}")
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


# Pipeline parameters that may override launcher_config fields; these values mean "not given".
_UNSET = ("", -1, None, {}, [])


def parse_launcher_config(data: dict[str, Any] | None,
                          overrides: dict[str, Any] | None = None) -> LauncherConfig:
    """Validate a launcher config mapping, with ``overrides`` (field: value) applied where their
    value is given (not "", -1, None, {} or []); a bad value, or an override that contradicts a
    value set in ``data``, raises a one-line UserError."""
    merged = dict(data or {})
    given = {k: v for k, v in (overrides or {}).items()
             if not any(v == u and type(v) is type(u) for u in _UNSET)}
    clash = sorted(k for k, v in given.items() if k in merged and merged[k] != v)
    if clash:
        raise UserError("invalid config: " + "; ".join(
            f"launcher.{k}={merged[k]!r} contradicts the pipeline parameter ({given[k]!r}); "
            "set it in one place" for k in clash))
    merged.update(given)
    try:
        return LauncherConfig.model_validate(merged)
    except ValidationError as exc:
        parts = [f"launcher.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}".replace(".: ", ": ")
                 for e in exc.errors()]
        raise UserError("invalid config: " + "; ".join(parts)) from None
