"""The generation stage: corpus documents in, chat samples out.

Teacher replies are recorded in a request journal (longalign.endpoints.journal) as they arrive. It
lives in ``generation.work_dir`` when set (on a cluster: a path on a persistent volume, since a KFP
output folder is new for every run), else in ``$LONGALIGN_CACHE/generation``; never in the output,
which is written only when the run succeeds. Re-running after a crash, a kill or an outage sends
only the requests that have no reply yet.

Failure rule (longalign.endpoints.failures): the run fails, leaving no output, when more than
``api.max_failure_rate`` of the teacher's requests failed after retries (checked after the question
batch and again after the answer batch), or when no teacher sample came out at all;
``api.allow_partial`` lets a run over the limit finish, reported as partial in stats and preview.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

from longalign.config import GenerationConfig
from longalign.endpoints import Journal, check_failures, journal_name
from longalign.endpoints.failures import reasons_text
from longalign.errors import UserError
from longalign.formats import CORPUS, Shards
from longalign.generation.prompts import Prompts
from longalign.generation.samples import Sample, preview_markdown, seeded_rng, write_shards
from longalign.generation.selfinstruct import Tally, self_instruct
from longalign.generation.shortdata import draw_short, load_short_chats
from longalign.generation.stats import REJECT_REASONS, build_stats
from longalign.generation.synthetic import synthetic_task
from longalign.generation.teachers import Teacher, make_teacher, window_of
from longalign.io import atomic_dir, check_output
from longalign.models import cache_root
from longalign.results import StageResult, numeric

log = logging.getLogger("longalign")
SYNTHETIC_TEACHER = "synthetic"
TEACHERS = ("local", "openai")
PROMPT_RESERVE = 256  # teacher tokens kept free in the window for the instructions and the question
__all__ = ["generate", "REJECT_REASONS"]


def load_documents(corpus: str | os.PathLike, seed: int, rejects: Counter) -> tuple[int, list[tuple[str, str]]]:
    """Corpus rows as ``(doc_id, text)`` in a seeded order that does not depend on the file order."""
    table = Shards(CORPUS, corpus).read_table(["id", "text"])
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




def journal_dir(config: GenerationConfig) -> Path:
    return Path(config.work_dir) if config.work_dir else cache_root() / "generation"


def _teacher_samples(config: GenerationConfig, teacher: Teacher, documents: list[tuple[str, str]],
                     prompts: Prompts, tally: Tally) -> tuple[list[Sample], dict]:
    """Self-Instruct samples, every teacher reply recorded in (and served from) the journal, the
    failure rule applied after each batch; returns the samples and the teacher facts for stats."""
    window, limited_by = window_of(teacher, config.teacher_context_tokens)
    document_tokens = window - config.max_new_tokens - PROMPT_RESERVE
    if document_tokens < 256:
        raise UserError(f"the teacher's window of {window} tokens leaves no room for a document after "
                        f"max_new_tokens={config.max_new_tokens}: raise teacher_context_tokens or lower max_new_tokens")
    name = journal_name(getattr(teacher, "fingerprint", teacher.name), config.seed, sorted(d for d, _ in documents))
    client = getattr(teacher, "client", None)
    failure: dict = {}

    def check() -> None:
        if client is not None:  # only an endpoint's requests can fail; a local model raises
            failure.update(check_failures(tally.usage, config.api, role="teacher", host=client.host,
                                          what="generation.api", kept=str(journal.path)))

    with Journal(journal_dir(config) / name) as journal:
        if journal.loaded:
            log.info("generation: %d teacher replies are in the journal %s; only the others are sent",
                     journal.loaded, journal.path)
        samples = self_instruct(documents, teacher, seed=config.seed, document_tokens=document_tokens,
                                max_new_tokens=config.max_new_tokens, tally=tally, prompts=prompts,
                                journal=journal, check=check)
        facts = {"journal": journal.info(), "failures": failure or None,
                 "window": {"tokens": window, "limited_by": limited_by, "document_tokens": document_tokens,
                            "truncated_documents": tally.truncated_documents, "documents": len(documents)}}
    if not samples:
        raise UserError(f"no teacher sample came out of {len(documents)} documents (rejects: "
                        f"{', '.join(f'{k}={v}' for k, v in sorted(tally.rejects.items()) if v) or 'none'}); "
                        "try a stronger teacher_model, or teacher=synthetic")
    if failure.get("partial"):
        why = ("PARTIAL DATA kept because generation.api.allow_partial is set" if failure["over_limit"]
               else "within the limit")
        log.warning("generation: %d of %d teacher requests failed after retries (%s), %s; their documents "
                    "have no teacher sample", failure["failed"], failure["attempted"],
                    reasons_text(failure["reasons"]), why)
    return samples, facts


def generate(config: GenerationConfig, corpus: str | os.PathLike, output: str | os.PathLike, *,
             overwrite: bool = False) -> StageResult:
    """Generate chat samples from a sourced corpus and write them to ``output``.

    With a teacher (``local`` or ``openai``) the first ``teacher_documents`` documents (seeded
    order; None: all) get a LongAlign Self-Instruct sample and every document gets
    ``synthetic_per_document`` recall tasks; with ``teacher="synthetic"`` only recall tasks are
    made (at least one per document). ``short_ratio`` short chats per long sample are mixed in
    from ``short_data``. Writes ``samples-*.parquet``, ``stats.json`` and ``preview.md``
    atomically and returns the StageResult. Raises UserError (and writes nothing) for a missing or empty
    corpus, a non-empty output without ``overwrite``, a teacher endpoint that refuses the key or
    model, too many failed teacher requests (the failure rule above), no teacher sample at all, or
    when no sample survives the gates.
    """
    start = time.monotonic()
    output = Path(output)
    check_output(output, overwrite)  # fail before any expensive work
    prompts = Prompts(config.prompts_dir)
    mix_short = bool(config.short_data and config.short_ratio > 0)
    short_pool = load_short_chats(config.short_data) if mix_short else None  # bad input fails before any call
    tally = Tally()
    rows, documents = load_documents(corpus, config.seed, tally.rejects)
    samples: list[Sample] = []
    teacher: Teacher | None = None
    teacher_docs: list[tuple[str, str]] = []
    teacher_facts = None
    per_document = config.synthetic_per_document
    if config.teacher in TEACHERS:
        teacher_docs = documents[: config.teacher_documents] if config.teacher_documents is not None else documents
        if teacher_docs:
            teacher = make_teacher(config.teacher, config.teacher_model, config.api,
                                   cpu_bf16=config.cpu_bf16)
            samples, teacher_facts = _teacher_samples(config, teacher, teacher_docs, prompts, tally)
    else:
        per_document = max(1, per_document)
    synthetic_start = time.monotonic()
    synthetic = synthetic_samples(documents, per_document, config.seed)
    tally.seconds["synthetic"] += time.monotonic() - synthetic_start
    # One document's samples stay together, in the seeded document order.
    rank = {doc_id: i for i, (doc_id, _) in enumerate(documents)}
    samples = sorted(samples + synthetic, key=lambda s: (rank[s.doc_id], s.reference is not None, s.index))
    short_stats = None
    if short_pool is not None:
        short, short_stats = draw_short(*short_pool, config.short_ratio, len(samples), config.seed)
        samples += short
    stats = build_stats(config, rows=rows, documents=documents, teacher_docs=len(teacher_docs), samples=samples,
                        tally=tally, teacher=teacher, seconds=time.monotonic() - start, facts=teacher_facts,
                        prompts={"digest": prompts.digest, "overridden": prompts.overridden}, short=short_stats)
    log.info("generation: %d samples from %d documents; rejects %s", len(samples),
             stats["documents"]["used"], {k: v for k, v in stats["rejects"].items() if v} or "none")
    if not samples:
        raise UserError(f"no sample was generated from {len(documents)} documents (rejects: "
                        f"{', '.join(f'{k}={v}' for k, v in stats['rejects'].items() if v) or 'none'}); "
                        "try teacher=synthetic or a stronger teacher_model")
    with atomic_dir(output, overwrite=overwrite) as tmp:
        stats["files"] = write_shards(tmp, samples)
        result = StageResult("generation", output, stats, metrics=numeric(stats["metrics"]),
                             headline={"samples": len(samples)}, summary="preview.md")
        result.write(tmp)
        (tmp / "preview.md").write_text(preview_markdown(samples, stats), encoding="utf-8")
    return result
