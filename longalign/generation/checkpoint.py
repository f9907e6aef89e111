"""A durable record of finished teacher requests, so a restarted run never pays for one twice.

The checkpoint is a JSON Lines file: one line per finished request, appended with a single
``write`` on an ``O_APPEND`` descriptor, then ``fsync``. A line carries the request key (a hash of
the teacher's identity, its sampling settings, ``max_tokens`` and the exact messages), the
document id, the task, the phase (``questions`` or ``answers``) and the reply with its token usage.
On start the file is read back; a line cut short by a kill (the last one) is cut off the file and
counted, and every intact line answers its request without sending it again. Because the key
covers the whole request, a changed prompt, model or document simply misses the cache, and one
checkpoint can be reused safely by later runs.

An exclusive ``flock`` on the file keeps two live runs from appending to it at once (a killed
process releases it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from longalign.errors import UserError

log = logging.getLogger("longalign")


def request_key(fingerprint: str, messages: Sequence[dict[str, str]], max_tokens: int) -> str:
    """The identity of one teacher request (hex, 32 characters)."""
    data = json.dumps({"teacher": fingerprint, "max_tokens": max_tokens, "messages": list(messages)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def checkpoint_name(fingerprint: str, seed: int, doc_ids: Sequence[str]) -> str:
    """The file name for one teacher, seed and set of documents (so unrelated runs sharing a
    work_dir do not contend for the same file)."""
    digest = hashlib.sha256(json.dumps([fingerprint, seed, sorted(doc_ids)]).encode()).hexdigest()[:16]
    return f"requests-{digest}.jsonl"


class Checkpoint:
    """Open (and lock) ``path``, load its finished requests; ``append`` adds one durably."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open the checkpoint {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UserError(f"checkpoint {self.path} is in use by another running generation; "
                            "wait for it or give this run its own work_dir") from None
        self.records: dict[str, dict[str, Any]] = {}
        self.loaded = 0
        self.damaged = 0
        self.appended = 0
        self._load()

    def _load(self) -> None:
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(0)
            data = f.read()
        good_end = 0
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("incomplete line")
                record = json.loads(line)
                key = record["key"]
            except (ValueError, KeyError, TypeError):
                self.damaged += 1
                if line.endswith(b"\n"):
                    good_end += len(line)  # a bad line in the middle is skipped, not cut
                continue
            self.records[key] = record
            good_end += len(line)
        if good_end < len(data):  # a last line cut short by a kill: remove it before appending
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self.loaded = len(self.records)
        if self.records or self.damaged:
            log.info("checkpoint %s: %d finished requests%s", self.path, self.loaded,
                     f", {self.damaged} damaged line(s) skipped" if self.damaged else "")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make it durable before returning."""
        data = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records[record["key"]] = record
        self.appended += 1

    def close(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
