"""The local model index: what the Kubeflow Model Registry keeps, as one JSON file per model.

``<index_dir>/<model name>/index.json`` lists the versions, oldest first: name (``v1``, ``v2``,
...), state (``LIVE`` or ``ARCHIVED``), artifact URI, creation time and properties (scores, data
fingerprint, pipeline run id, ...). It is rewritten atomically under a file lock, so runs that
finish at the same time do not lose each other's versions. Rolling back is archiving the newer
versions (``set_state``): the gate then compares with, and serving should point at, the newest
version still live.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from longalign.errors import UserError
from longalign.io import read_json, write_json

STATES = ("LIVE", "ARCHIVED")


class LocalIndex:
    """Versions of registered models in a folder (``registry: local``)."""

    kind = "local"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()

    def where(self, name: str) -> str:
        return str(self.folder / name / "index.json")

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"promotion.model_name {name!r}: use a plain name (no '/')")
        return self.folder / name / "index.json"

    @contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            return {"versions": []}
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("versions"), list):
            raise UserError(f"{path} is not a longalign model index (no versions list)")
        return data

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of ``name``, oldest first (empty when the model is not registered)."""
        return self._load(self._path(name))["versions"]

    def register(self, name: str, uri: str, properties: dict[str, Any], *, description: str = "",
                 author: str = "") -> str:
        """Add a LIVE version of ``name`` pointing at ``uri``; returns the new version's name."""
        with self._locked(name) as path:
            data = self._load(path)
            version = f"v{len(data['versions']) + 1}"
            data["name"] = name
            data["versions"].append({
                "version": version, "state": "LIVE", "uri": uri, "author": author,
                "description": description, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "properties": properties,
            })
            write_json(path, data)
        return version

    def set_state(self, name: str, version: str, state: str) -> None:
        """Archive (roll back) or revive one version."""
        if state not in STATES:
            raise UserError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        with self._locked(name) as path:
            data = self._load(path)
            for entry in data["versions"]:
                if entry["version"] == version:
                    entry["state"] = state
                    write_json(path, data)
                    return
        raise UserError(f"model {name!r} has no version {version!r}")
