"""The ``promotion`` section: the gate at the end of a run and the registry of promoted models
(longalign/promotion; docs/cluster.md, "Weekly retrain"). The pipelines' ``promotion_config``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from longalign.config.base import Section


class PromotionConfig(Section):
    """The promotion gate at the end of a run: compare with the last promoted version, register
    the model only when no gated suite got worse by more than its margin."""

    model_name: str = Field("longalign", min_length=1, description="Registered model name.")
    registry: Literal["local", "kubeflow"] = Field(
        "local", description="Where promoted models are registered: 'local', a file index in "
        "index_dir, or 'kubeflow', the Kubeflow Model Registry at url.")
    index_dir: str | None = Field(
        None, description="Folder of the local index (None: $LONGALIGN_CACHE/registry, on the "
        "cluster below the shared volume).")
    url: str | None = Field(
        None, description="Model Registry REST endpoint for registry=kubeflow, e.g. "
        "https://model-registry-service.kubeflow.svc.cluster.local:8443 (http:// for no TLS).")
    token_env: str | None = Field(
        "LONGALIGN_REGISTRY_TOKEN", description="Environment variable with the Model Registry "
        "bearer token; unset or empty: token_file, else the pod's service-account token.")
    token_file: str | None = Field(None, description="File with the Model Registry bearer token.")
    ca_file: str | None = Field(None, description="CA bundle for the Model Registry's TLS certificate.")
    author: str = Field("longalign", description="Author and owner recorded with new versions.")
    margins: dict[str, float] = Field(
        default_factory=lambda: {"needle": 0.02, "recall": 0.02, "longbench-chat": 0.25},
        description="Gated suites and how far each may fall below the last promoted version "
        "(accuracy in [0, 1]; LongBench-Chat rating 1-10, gated when the run has a judge). "
        "Suites not listed are reported, not gated.")
    fail_on_block: bool = Field(
        False, description="A blocked promotion fails the task (and the run) instead of ending it "
        "with 'not promoted: <reason>'.")

    @model_validator(mode="after")
    def _check_registry(self) -> "PromotionConfig":
        if self.registry == "kubeflow" and not self.url:
            raise ValueError("registry=kubeflow needs url (the Model Registry REST endpoint)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if any(m < 0 for m in self.margins.values()):
            raise ValueError("margins must be >= 0")
        return self
