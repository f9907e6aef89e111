"""The Kubeflow Model Registry backend, through its Python client (``model-registry``).

A promoted model becomes a RegisteredModel (created on first use), a ModelVersion named ``vN``
with the run's scores, data fingerprint, pipeline run id and lineage as custom properties, and a
ModelArtifact with the model's URI (``pvc://`` for checkpoints on the shared volume, or the
pipeline's object store). The tests run the client (0.3.8) against a server on 127.0.0.1 that
validates every request against the upstream v0.3.8 OpenAPI spec (tests/data/model-registry/).

The bearer token comes from the environment variable ``token_env`` or the file ``token_file``;
with neither, the client reads ``$KF_PIPELINES_SA_TOKEN_PATH`` or the pod's service-account token.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from longalign.config import PromotionConfig
from longalign.errors import UserError

log = logging.getLogger("longalign")

MODEL_FORMAT = ("safetensors", "1")


def _token(config: PromotionConfig) -> str | None:
    if config.token_env and os.environ.get(config.token_env):
        return os.environ[config.token_env].strip()
    if config.token_file:
        try:
            return Path(config.token_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read promotion.token_file ({config.token_file}): {exc.strerror}") from None
    return None


class KubeflowRegistry:
    """Versions of registered models in a Kubeflow Model Registry (``registry: kubeflow``)."""

    kind = "kubeflow"

    def __init__(self, config: PromotionConfig) -> None:
        from model_registry import ModelRegistry

        url = urlparse(config.url or "")
        secure = url.scheme == "https"
        self.url = config.url
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "user access token is missing" on plain http
                self.client = ModelRegistry(
                    f"{url.scheme}://{url.hostname}", url.port or (443 if secure else 80),
                    author=config.author, is_secure=secure, user_token=_token(config),
                    custom_ca=config.ca_file)
        except Exception as exc:  # the client raises many types for an unreachable or wrong host
            raise UserError(f"cannot reach the Model Registry at {config.url}: {_reason(exc)}") from None

    def where(self, name: str) -> str:
        return f"{self.url} (registered model {name!r})"

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of ``name``, oldest first, with its artifact URI and properties."""
        try:
            if self.client.get_registered_model(name) is None:
                return []
            out = []
            for mv in self.client.get_model_versions(name).order_by_creation_time().ascending():
                artifact = self.client.get_model_artifact(name, mv.name)
                out.append({"version": mv.name, "id": mv.id, "state": getattr(mv.state, "value", mv.state),
                            "uri": artifact.uri if artifact else None, "author": mv.author,
                            "description": mv.description, "created": mv.create_time_since_epoch,
                            "properties": dict(mv.custom_properties or {})})
            return out
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"Model Registry at {self.url}: listing {name!r} failed: {_reason(exc)}") from None

    def register(self, name: str, uri: str, properties: dict[str, Any], *, description: str = "",
                 author: str = "") -> str:
        version = f"v{len(self.versions(name)) + 1}"
        try:
            self.client.register_model(
                name, uri, version=version, model_format_name=MODEL_FORMAT[0],
                model_format_version=MODEL_FORMAT[1], author=author or None, owner=author or None,
                version_description=description, metadata=properties)
        except Exception as exc:
            raise UserError(f"Model Registry at {self.url}: registering {name} {version} failed: "
                            f"{_reason(exc)}") from None
        return version

    def set_state(self, name: str, version: str, state: str) -> None:
        from model_registry.types import ModelVersionState

        mv = self.client.get_model_version(name, version)
        if mv is None:
            raise UserError(f"model {name!r} has no version {version!r}")
        mv.state = ModelVersionState(state)
        self.client.update(mv)


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"
