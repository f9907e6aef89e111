"""Short instruction chats mixed into the long samples (LongAlign mixed in ShareGPT).

``generation.short_data`` names a JSONL file, a Parquet file, or a folder of ``*.jsonl``,
``*.parquet`` or ``*.arrow`` files (a Hugging Face dataset written by ``save_to_disk`` holds Arrow
stream files; one exported to Parquet works too). A record is a chat in one of two shapes:

- ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``;
- ShareGPT's ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``.

A usable chat has at least one user and one assistant message, non-empty string contents, and
ends with an assistant message. Anything else is skipped and counted with its reason.
``short_ratio`` short chats are drawn per long sample, seeded and without replacement (all of
them when the pool is smaller; the shortfall is reported).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from longalign.errors import UserError
from longalign.generation.samples import Sample, seeded_rng

log = logging.getLogger("longalign")
SHORT_TASK = "short"
SHORT_TEACHER = "short_data"
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
_ROLES = {"system", "user", "assistant"}
_SUFFIXES = (".jsonl", ".parquet", ".arrow")


def normalize_chat(record: Any) -> tuple[tuple[tuple[str, str], ...] | None, str]:
    """``((role, content), ...)`` from one record, or ``(None, reason)``."""
    if not isinstance(record, dict):
        return None, "not_an_object"
    if "messages" in record:
        raw = record["messages"]
        pairs = [(m.get("role"), m.get("content")) if isinstance(m, dict) else (None, None) for m in raw or []]
    elif "conversations" in record:
        raw = record["conversations"]
        pairs = [(_SHAREGPT_ROLES.get(str(m.get("from", "")).lower()), m.get("value")) if isinstance(m, dict)
                 else (None, None) for m in raw or []]
    else:
        return None, "no_messages"
    if not pairs:
        return None, "no_messages"
    if any(role not in _ROLES for role, _ in pairs):
        return None, "bad_role"
    if any(not isinstance(content, str) or not content.strip() for _, content in pairs):
        return None, "empty_message"
    roles = [role for role, _ in pairs]
    if "user" not in roles or roles[-1] != "assistant":
        return None, "no_final_answer"
    return tuple((role, content) for role, content in pairs), ""


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        if files:
            return files
        raise UserError(f"short_data {path} holds no .jsonl, .parquet or .arrow files")
    raise UserError(f"short_data not found: {path}")


def _records(path: Path, skips: Counter) -> Iterator[Any]:
    if path.suffix in (".parquet", ".arrow"):
        try:
            if path.suffix == ".parquet":
                table = pq.read_table(path)
            else:
                with pa.OSFile(str(path)) as f:
                    table = pa.ipc.open_stream(f).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read short_data {path}: {exc}") from None
        yield from table.to_pylist()
        return
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    skips["bad_json"] += 1
    except UnicodeDecodeError:
        raise UserError(f"short_data {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read short_data {path}: {exc.strerror}") from None


def load_short_chats(source: str | os.PathLike) -> tuple[list[tuple[tuple[str, str], ...]], Counter]:
    """All usable chats of ``source`` (duplicates removed) and the skip counts by reason."""
    skips: Counter = Counter()
    chats: list[tuple[tuple[str, str], ...]] = []
    seen: set[str] = set()
    for path in _files(Path(source)):
        for record in _records(path, skips):
            chat, reason = normalize_chat(record)
            if chat is None:
                skips[reason] += 1
                continue
            digest = hashlib.sha256(json.dumps(chat).encode()).hexdigest()
            if digest in seen:
                skips["duplicate"] += 1
                continue
            seen.add(digest)
            chats.append(chat)
    return chats, skips


def draw_short(chats: list[tuple[tuple[str, str], ...]], skips: Counter, ratio: float, long_samples: int,
               seed: int) -> tuple[list[Sample], dict]:
    """``round(ratio * long_samples)`` of the loaded ``chats`` drawn with the seed, and their stats."""
    wanted = round(ratio * long_samples)
    rng = seeded_rng(seed, "short-data")
    picked = sorted(rng.sample(range(len(chats)), min(wanted, len(chats))))
    if wanted > len(chats):
        log.warning("short_data holds %d usable chats; %d were asked for (short_ratio %.3g x %d long samples)",
                    len(chats), wanted, ratio, long_samples)
    samples = []
    for index in picked:
        chat = chats[index]
        digest = hashlib.sha256(json.dumps(chat).encode()).hexdigest()[:16]
        first_user = next(content for role, content in chat if role == "user")
        samples.append(Sample(doc_id=f"short:{digest}", task=SHORT_TASK, index=0, teacher=SHORT_TEACHER,
                              user=first_user, answer=chat[-1][1], question=first_user[:200], messages=chat))
    stats = {"available": len(chats), "requested": wanted, "used": len(samples),
             "skipped": dict(sorted(skips.items()))}
    return samples, stats
