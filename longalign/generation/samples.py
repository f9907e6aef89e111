"""The stage's output: chat samples (rows of ``longalign.formats.CHATS``), their shards and the
Markdown preview."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longalign.formats import CHATS, ShardWriter
from longalign.io import markdown_table

SHARD_ROWS = 2000
SHARD_CHARS = 200_000_000  # a new shard also starts after this many characters of chat text
PREVIEW_SAMPLES = 4

def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A generator determined by the seed and the given parts only (not by call order)."""
    key = "\x1f".join(str(p) for p in (seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def sample_id(doc_id: str, task: str, index: int) -> str:
    """Stable sample id: a hash of document id, task and index."""
    return hashlib.sha256(f"{doc_id}\x1f{task}\x1f{index}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Sample:
    """One chat: user = document + question, assistant = answer (or, for mixed-in short data,
    the given ``messages`` as they are)."""

    doc_id: str
    task: str
    index: int
    teacher: str
    user: str
    answer: str
    question: str  # the question alone (for the preview; not a column)
    reference: str | None = None
    prompt_tokens: int | None = None  # the teacher's usage for the answer request
    completion_tokens: int | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs of a given chat

    @property
    def id(self) -> str:
        return sample_id(self.doc_id, self.task, self.index)

    @property
    def chat(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [{"role": role, "content": content} for role, content in self.messages]
        return [{"role": "user", "content": self.user}, {"role": "assistant", "content": self.answer}]

    @property
    def n_chars(self) -> int:
        return sum(len(m["content"]) for m in self.chat)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": self.chat,
            "task": self.task,
            "teacher": self.teacher,
            "doc_id": self.doc_id,
            "reference": self.reference,
            "n_chars": self.n_chars,
            "teacher_prompt_tokens": self.prompt_tokens,
            "teacher_completion_tokens": self.completion_tokens,
        }


def write_shards(directory: Path, samples: list[Sample]) -> list[str]:
    """Write ``samples-00000.parquet`` and further shards; returns the file names."""
    writer = ShardWriter(CHATS, directory, max_rows=SHARD_ROWS, max_bytes=SHARD_CHARS,
                         size=lambda row: row["n_chars"])
    for sample in samples:
        writer.add(sample.row())
    return writer.flush()


def _shorten(text: str, head: int = 400, tail: int = 200) -> str:
    if len(text) <= head + tail + 50:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail:,} characters ...]\n{text[-tail:]}"


def _fence(text: str) -> str:
    return "~~~~text\n" + text.replace("~~~~", "~ ~ ~ ~") + "\n~~~~"


def preview_markdown(samples: list[Sample], stats: dict[str, Any]) -> str:
    """A few samples (teacher tasks first, then synthetic ones) and the main counts."""
    lines = ["# Generated samples", ""]
    failures = stats.get("teacher_failures") or {}
    if failures.get("partial"):
        lines += [f"**{'PARTIAL DATA' if failures['over_limit'] else 'Some teacher requests failed'}:** "
                  f"{failures['failed']} of {failures['attempted']} teacher requests to {failures['host']} "
                  f"failed after retries ({', '.join(f'{k} {v}' for k, v in failures['reasons'].items())}); "
                  f"limit {failures['limit']:.0%}. Their documents have no teacher sample.", ""]
    window = stats.get("teacher_window")
    if window:
        lines += [f"Teacher window: {window['tokens']:,} tokens (set by {window['limited_by']}); "
                  f"{window['truncated_documents']} of {window['documents']} documents were longer than "
                  f"{window['document_tokens']:,} tokens and reached the teacher middle-truncated.", ""]
    by_task = stats["samples"]["by_task"]
    lines.append(markdown_table(sorted(by_task.items()), ("task", "samples")))
    rejects = sorted((reason, n) for reason, n in stats["rejects"].items() if n)
    if rejects:
        lines += ["## Rejected", "", markdown_table(rejects, ("reason", "count"))]
    teacher_samples = [s for s in samples if s.reference is None and s.messages is None]
    synthetic = [s for s in samples if s.reference is not None]
    shown = teacher_samples[: PREVIEW_SAMPLES - min(2, len(synthetic))]
    shown += synthetic[: PREVIEW_SAMPLES - len(shown)]
    for n, sample in enumerate(shown, 1):
        lines += [
            f"## Sample {n}: {sample.task} ({sample.teacher})", "",
            f"- document: `{sample.doc_id}` ({sample.n_chars:,} characters in the chat)",
            f"- question: {sample.question}", "",
            "Answer:", "", _fence(sample.answer), "",
            "<details><summary>User message (shortened)</summary>", "",
            _fence(_shorten(sample.user)), "", "</details>", "",
        ]
    return "\n".join(lines)
