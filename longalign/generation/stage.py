"""The generation stage: corpus documents in, chat samples out."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from longalign.config import GenerationConfig
from longalign.errors import UserError
from longalign.generation.samples import Sample, preview_markdown, seeded_rng, write_shards
from longalign.generation.selfinstruct import Tally, self_instruct
from longalign.generation.synthetic import synthetic_task
from longalign.generation.teachers import Teacher, make_teacher
from longalign.io import atomic_dir, read_parquet_dir, write_json

log = logging.getLogger("longalign")
SYNTHETIC_TEACHER = "synthetic"
# Every reject reason, reported even when zero so that the metrics keep the same keys.
REJECT_REASONS = (
    "empty_document", "duplicate_doc_id",  # corpus rows
    "truncated_question", "duplicate_question", "not_a_question",  # proposed questions
    "no_question",  # documents whose reply held no usable question
    "empty_answer", "refusal", "copied_document",  # answers
)


def _check_output(output: Path, overwrite: bool) -> None:
    """Fail before any expensive work if atomic_dir would refuse the output later."""
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a directory")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise UserError(f"output {output} already exists and is not empty (use --overwrite)")


def load_documents(corpus: str | os.PathLike, seed: int, rejects: Counter) -> tuple[int, list[tuple[str, str]]]:
    """Corpus rows as ``(doc_id, text)`` in a seeded order that does not depend on the file order."""
    table = read_parquet_dir(corpus, "corpus", "documents")
    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise UserError(f"corpus {corpus} lacks column(s) {', '.join(sorted(missing))}: "
                        "is it the sourcing stage's output?")
    seen: set[str] = set()
    documents = []
    for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
        if not text or not text.strip():
            rejects["empty_document"] += 1
        elif doc_id in seen:
            rejects["duplicate_doc_id"] += 1
        else:
            seen.add(doc_id)
            documents.append((str(doc_id), text))
    if not documents:
        raise UserError(f"corpus {corpus} holds no usable documents ({table.num_rows} rows)")
    documents.sort(key=lambda d: (seeded_rng(seed, d[0], "order").random(), d[0]))
    return table.num_rows, documents


def synthetic_samples(documents: list[tuple[str, str]], per_document: int, seed: int) -> list[Sample]:
    """``per_document`` exact-answer recall samples for every document."""
    samples = []
    for doc_id, text in documents:
        for index in range(per_document):
            task = synthetic_task(text, doc_id, index, seed)
            samples.append(Sample(doc_id=doc_id, task=task.task, index=index, teacher=SYNTHETIC_TEACHER,
                                  user=task.user, answer=task.reference, question=task.question,
                                  reference=task.reference))
    return samples


def _stats(config: GenerationConfig, rows: int, documents: list, teacher_docs: int, samples: list[Sample],
           tally: Tally, teacher: Teacher | None, seconds: float) -> dict[str, Any]:
    by_task = Counter(s.task for s in samples)
    by_teacher = Counter(s.teacher for s in samples)
    rejects = {reason: tally.rejects.get(reason, 0) for reason in REJECT_REASONS}
    rejects.update({k: v for k, v in tally.rejects.items() if k not in rejects})
    used = len({s.doc_id for s in samples})
    stats: dict[str, Any] = {
        "teacher": config.teacher,
        "teacher_model": config.teacher_model if teacher else None,
        "documents": {"rows": rows, "valid": len(documents), "teacher": teacher_docs, "used": used},
        "samples": {"total": len(samples), "by_task": dict(sorted(by_task.items())),
                    "by_teacher": dict(sorted(by_teacher.items()))},
        "rejects": rejects,
        "teacher_usage": {
            "calls": tally.calls, "batches": getattr(teacher, "batches", 0),
            "prompt_tokens": tally.prompt_tokens, "generated_tokens": tally.generated_tokens,
            "truncated_documents": tally.truncated_documents, "answers_cut": tally.answers_cut,
        },
        "seconds": {"total": round(seconds, 3),
                    "teacher_load": round(getattr(teacher, "load_seconds", 0.0), 3),
                    **{k: round(v, 3) for k, v in sorted(tally.seconds.items())}},
    }
    teacher_seconds = tally.seconds["questions"] + tally.seconds["answers"]
    metrics: dict[str, float | int] = {
        "documents_valid": len(documents), "documents_used": used, "samples": len(samples),
        "teacher_calls": tally.calls, "generated_tokens": tally.generated_tokens,
        "generated_tokens_per_second": round(tally.generated_tokens / teacher_seconds, 3) if teacher_seconds else 0,
        "rejects": sum(rejects.values()), "seconds": round(seconds, 3),
    }
    metrics.update({f"samples_{task}": n for task, n in by_task.items()})
    metrics.update({f"rejects_{reason}": n for reason, n in rejects.items()})
    stats["metrics"] = metrics
    return stats


def generate(config: GenerationConfig, corpus: str | os.PathLike, output: str | os.PathLike, *,
             overwrite: bool = False) -> dict:
    """Generate chat samples from a sourced corpus and write them to ``output``.

    With ``teacher="local"`` the first ``teacher_documents`` documents (seeded order; None: all)
    get a LongAlign Self-Instruct sample from the teacher model and every document gets
    ``synthetic_per_document`` recall tasks; with ``teacher="synthetic"`` only recall tasks are
    made (at least one per document). Writes ``samples-*.parquet``, ``stats.json`` and
    ``preview.md`` atomically and returns the stats. Raises UserError for a missing or empty
    corpus, a non-empty output without ``overwrite``, or when no sample survives the gates.
    """
    start = time.monotonic()
    output = Path(output)
    _check_output(output, overwrite)
    tally = Tally()
    rows, documents = load_documents(corpus, config.seed, tally.rejects)
    samples: list[Sample] = []
    teacher: Teacher | None = None
    teacher_docs: list[tuple[str, str]] = []
    per_document = config.synthetic_per_document
    if config.teacher == "local":
        teacher_docs = documents[: config.teacher_documents] if config.teacher_documents is not None else documents
        if teacher_docs:
            teacher = make_teacher(config.teacher, config.teacher_model)
            samples = self_instruct(teacher_docs, teacher, seed=config.seed,
                                    context_tokens=config.teacher_context_tokens,
                                    max_new_tokens=config.max_new_tokens, tally=tally)
    else:
        per_document = max(1, per_document)
    synthetic_start = time.monotonic()
    synthetic = synthetic_samples(documents, per_document, config.seed)
    tally.seconds["synthetic"] += time.monotonic() - synthetic_start
    # One document's samples stay together, in the seeded document order.
    rank = {doc_id: i for i, (doc_id, _) in enumerate(documents)}
    samples = sorted(samples + synthetic, key=lambda s: (rank[s.doc_id], s.reference is not None, s.index))
    stats = _stats(config, rows, documents, len(teacher_docs), samples, tally, teacher, time.monotonic() - start)
    log.info("generation: %d samples from %d documents; rejects %s", len(samples),
             stats["documents"]["used"], {k: v for k, v in stats["rejects"].items() if v} or "none")
    if not samples:
        raise UserError(f"no sample was generated from {len(documents)} documents (rejects: "
                        f"{', '.join(f'{k}={v}' for k, v in stats['rejects'].items() if v) or 'none'}); "
                        "try teacher=synthetic or a stronger teacher_model")
    with atomic_dir(output, overwrite=overwrite) as tmp:
        stats["files"] = write_shards(tmp, samples)
        write_json(tmp / "stats.json", stats)
        (tmp / "preview.md").write_text(preview_markdown(samples, stats), encoding="utf-8")
    return stats
