"""LongAlign's Self-Instruct over long documents (recipe section 2).

For each document: pick one of four task types (seeded by seed and document id), ask the teacher
for 5 numbered questions about the document, parse them, drop bad ones and ones already picked for
an earlier document, pick one at random, ask the teacher to answer it with the document in context,
gate the answer, and emit a chat whose user message holds the FULL document and the question. The
teacher reads the whole document when it fits its context window (``document_tokens``); only a
longer one is middle-truncated for the teacher, and counted. All question prompts go to the teacher
as one batch, then all answer prompts as one batch; ``check`` runs after each batch (the failure
rule). With a journal, a request answered in an earlier run is served from it and never sent
again; every new successful reply is written to it as soon as it arrives.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from longalign.endpoints.journal import Journal, request_key, through_journal
from longalign.endpoints.reply import Usage
from longalign.generation.gates import check_answer, check_question, dedupe_questions, question_key
from longalign.generation.parsing import parse_questions
from longalign.generation.prompts import TASK_TYPES, Prompts, default_prompts
from longalign.generation.samples import Sample, seeded_rng
from longalign.generation.interface import Chat, Completion, Teacher

log = logging.getLogger("longalign")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass
class Tally:
    """What the teacher did (``usage``: requests, journal hits, failures, tokens) and what the
    gates rejected (reason -> count)."""

    rejects: Counter = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    truncated_documents: int = 0
    answers_cut: int = 0
    seconds: Counter = field(default_factory=Counter)

    def ask(self, teacher: Teacher, prompts: Sequence[Chat], max_new_tokens: int, phase: str, *,
            meta: Sequence[tuple[str, str]] | None = None, journal: Journal | None = None) -> list[Completion]:
        """Answer ``prompts`` (from the journal where possible), record new replies durably, and
        account for them. ``meta`` holds ``(doc_id, task)`` per prompt for the journal."""
        if not prompts:
            return []
        start = time.monotonic()
        fingerprint = getattr(teacher, "fingerprint", teacher.name)
        keys = [request_key({"teacher": fingerprint, "max_tokens": max_new_tokens, "messages": list(chat)})
                for chat in prompts]
        records = [{"doc_id": d, "task": t, "phase": phase, "teacher": teacher.name} for d, t in meta] if meta else None
        results = through_journal(journal, keys, lambda idx, cb: teacher.complete(
            [prompts[i] for i in idx], max_new_tokens, on_result=cb), records)
        for reply in results:
            self.usage.add(reply)
        self.seconds[phase] += time.monotonic() - start
        return results


def choose_task(seed: int, doc_id: str) -> str:
    """The task type of a document (one of TASK_TYPES), drawn with the seed."""
    return seeded_rng(seed, doc_id, "task").choice(TASK_TYPES)


def select_question(reply: Completion, tally: Tally) -> list[str]:
    """Usable questions from a proposal reply, with every rejected candidate counted."""
    questions = parse_questions(reply.text)
    if reply.finish_reason == "length" and questions and not questions[-1].endswith(("?", ".")):
        questions.pop()  # cut off by the token limit
        tally.rejects["truncated_question"] += 1
    questions, duplicates = dedupe_questions(questions)
    tally.rejects["duplicate_question"] += duplicates
    kept = []
    for question in questions:
        reason = check_question(question)
        if reason:
            tally.rejects[reason] += 1
        else:
            kept.append(question)
    return kept


def tidy_answer(reply: Completion, tally: Tally) -> str:
    """The answer text; one cut by the token limit ends at its last full sentence when that
    keeps at least half of it."""
    text = reply.text.strip()
    if reply.finish_reason == "length":
        tally.answers_cut += 1
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends and ends[-1] >= len(text) / 2:
            text = text[: ends[-1]]
    return text


def _unusable(reply: Completion, tally: Tally) -> bool:
    """Count and skip a failed request or a content-filtered reply."""
    if reply.error is not None:
        tally.rejects["teacher_error"] += 1
        return True
    if reply.finish_reason == "content_filter":
        tally.rejects["content_filter"] += 1
        return True
    return False


def self_instruct(documents: Sequence[tuple[str, str]], teacher: Teacher, *, seed: int,
                  document_tokens: int, max_new_tokens: int, tally: Tally, prompts: Prompts | None = None,
                  journal: Journal | None = None, check: Callable[[], None] | None = None) -> list[Sample]:
    """Teacher-written samples (at most one per document) for ``(doc_id, text)`` pairs, in order.
    ``document_tokens``: the most teacher tokens of a document that fit the teacher's window."""
    prompts = prompts or default_prompts()
    check = check or (lambda: None)
    fitted = []
    for _, text in documents:
        short, cut = teacher.truncate(text, document_tokens)
        tally.truncated_documents += cut
        fitted.append(short)
    tasks = [choose_task(seed, doc_id) for doc_id, _ in documents]
    proposals = tally.ask(teacher, [prompts.question_prompt(t, f) for t, f in zip(tasks, fitted)],
                          max_new_tokens, "questions", journal=journal,
                          meta=[(doc_id, task) for (doc_id, _), task in zip(documents, tasks)])
    check()
    picked: list[tuple[int, str]] = []
    used: set[str] = set()  # questions picked for earlier documents
    for i, reply in enumerate(proposals):
        doc_id = documents[i][0]
        if _unusable(reply, tally):
            continue
        questions = select_question(reply, tally)
        fresh = [q for q in questions if question_key(q) not in used]
        tally.rejects["repeated_question"] += len(questions) - len(fresh)
        if not fresh:
            tally.rejects["no_question"] += 1
            log.info("document %s: no usable question in the teacher reply %r", doc_id, reply.text[:200])
            continue
        question = seeded_rng(seed, doc_id, "pick").choice(fresh)
        used.add(question_key(question))
        picked.append((i, question))
    answers = tally.ask(teacher, [prompts.answer_prompt(fitted[i], q) for i, q in picked], max_new_tokens,
                        "answers", journal=journal, meta=[(documents[i][0], tasks[i]) for i, _ in picked])
    check()
    samples = []
    for (i, question), reply in zip(picked, answers):
        doc_id, text = documents[i]
        if _unusable(reply, tally):
            continue
        answer = tidy_answer(reply, tally)
        reason = check_answer(answer, text)
        if reason:
            tally.rejects[reason] += 1
            log.info("document %s: answer rejected (%s): %r", doc_id, reason, answer[:200])
            continue
        samples.append(Sample(doc_id=doc_id, task=tasks[i], index=0, teacher=teacher.name,
                              user=f"{text}\n\n{question}", answer=answer, question=question,
                              prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens))
    return samples
