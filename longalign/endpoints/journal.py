"""The durable request journal: every successful reply is kept, so a rerun sends only what failed.

A journal is one JSON Lines file: one line per successful request, appended with a single ``write``
on an ``O_APPEND`` descriptor, then ``fsync``. A line carries the request key (a hash of the whole
request: model, messages, sampling settings, token limit, and an attempt number for deliberate
repeats), the reply with its token usage, and free metadata of the caller (document id, task, ...).
On open the file is read back; a line cut short by a kill (the last one) is cut off and counted, and
every intact line answers its request without sending it again. Because the key covers the whole
request, a changed prompt, model or document simply misses, and one journal can serve later runs.
Failed requests are never written: a rerun sends exactly those.

An exclusive ``flock`` keeps two live runs from appending to one file at once (a killed process
releases it).

Users: the generation teacher (``generation.work_dir``, default ``$LONGALIGN_CACHE/generation``) and
the LongBench-Chat judge (``longbench_chat.cache_dir``). Answers of a model under test are never
journaled (a new checkpoint may be served under the same name).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from longalign.endpoints.reply import Reply
from longalign.errors import UserError

log = logging.getLogger("longalign")
# send(indices, on_result) -> replies for those indices, in order; on_result(j, reply) as each finishes
Send = Callable[[list[int], Callable[[int, Reply], None]], list[Reply]]


def request_key(identity: Any, attempt: int = 0) -> str:
    """The key of one request (hex, 32 characters): a hash of ``identity`` (any JSON value, e.g.
    the request body, or a teacher fingerprint with messages and token limit) and ``attempt``."""
    data = json.dumps({"request": identity, "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def journal_name(*parts: Any) -> str:
    """A file name for one kind of run (e.g. teacher, seed and documents), so unrelated runs that
    share a folder do not contend for one file."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"requests-{digest}.jsonl"


class Journal:
    """Open (and lock) ``path`` and load its replies; ``append`` adds one durably. A journal in use
    by another process is refused, or waited for with ``wait=True`` (journals held per batch)."""

    def __init__(self, path: str | os.PathLike, *, wait: bool = False):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open the request journal {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UserError(f"the request journal {self.path} is in use by another running job; "
                            "wait for it or give this run its own folder") from None
        self.records: dict[str, dict[str, Any]] = {}
        self.loaded = 0
        self.damaged = 0
        self.appended = 0
        self.served = 0  # requests answered from the journal in this run
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
            log.info("request journal %s: %d finished requests%s", self.path, self.loaded,
                     f", {self.damaged} damaged line(s) skipped" if self.damaged else "")

    def get(self, key: str) -> Reply | None:
        record = self.records.get(key)
        if record is None:
            return None
        return Reply(record["text"], record.get("prompt_tokens", 0), record.get("completion_tokens", 0),
                     record.get("finish_reason", "stop"), cached=True)

    def append(self, key: str, reply: Reply, **meta: Any) -> None:
        """Write one successful reply and make it durable before returning."""
        record = {**meta, "key": key, "text": reply.text, "finish_reason": reply.finish_reason,
                  "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        data = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records[key] = record
        self.appended += 1

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "loaded": self.loaded, "served": self.served,
                "appended": self.appended, "damaged_lines": self.damaged}

    def close(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def through_journal(journal: Journal | None, keys: Sequence[str], send: Send,
                    meta: Sequence[dict] | None = None) -> list[Reply]:
    """Replies for ``keys``: those in ``journal`` without sending, the others from ``send`` (called
    once with the missing indices); each successful new reply is appended as soon as it arrives."""
    results: list[Reply | None] = [journal.get(k) if journal is not None else None for k in keys]
    missing = [i for i, r in enumerate(results) if r is None]
    if journal is not None:
        journal.served += len(keys) - len(missing)
    recorded: set[int] = set()

    def on_result(j: int, reply: Reply) -> None:
        i = missing[j]
        if journal is None or reply.error is not None or i in recorded:
            return
        recorded.add(i)
        journal.append(keys[i], reply, **(meta[i] if meta else {}))

    if missing:
        for j, reply in enumerate(send(missing, on_result)):
            on_result(j, reply)  # a no-op for replies already reported
            results[missing[j]] = reply
    return results  # type: ignore[return-value]
