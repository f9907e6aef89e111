"""LongAlign's Self-Instruct over long documents (recipe section 2).

For each document: pick one of four task types (seeded by seed and document id), ask the teacher
for 5 numbered questions about the middle-truncated document, parse them, drop bad ones, pick one
at random, ask the teacher to answer it with the document in context, gate the answer, and emit
a chat whose user message holds the FULL document and the question. All question prompts go to
the teacher as one batch, then all answer prompts as one batch.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from longalign.generation.gates import check_answer, check_question, dedupe_questions
from longalign.generation.parsing import parse_questions
from longalign.generation.prompts import TASK_TYPES, answer_prompt, question_prompt
from longalign.generation.samples import Sample, seeded_rng
from longalign.generation.teachers import Chat, Completion, Teacher

log = logging.getLogger("longalign")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass
class Tally:
    """What the teacher did and what the gates rejected (reason -> count)."""

    rejects: Counter = field(default_factory=Counter)
    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    truncated_documents: int = 0
    answers_cut: int = 0
    seconds: Counter = field(default_factory=Counter)

    def ask(self, teacher: Teacher, prompts: Sequence[Chat], max_new_tokens: int, phase: str) -> list[Completion]:
        """Run one batched teacher call and account for it."""
        if not prompts:
            return []
        start = time.monotonic()
        completions = teacher.complete(prompts, max_new_tokens)
        self.seconds[phase] += time.monotonic() - start
        self.calls += len(prompts)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.generated_tokens += sum(c.completion_tokens for c in completions)
        return completions


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


def self_instruct(documents: Sequence[tuple[str, str]], teacher: Teacher, *, seed: int,
                  context_tokens: int, max_new_tokens: int, tally: Tally) -> list[Sample]:
    """Teacher-written samples (at most one per document) for ``(doc_id, text)`` pairs."""
    fitted = []
    for _, text in documents:
        short, cut = teacher.truncate(text, context_tokens)
        tally.truncated_documents += cut
        fitted.append(short)
    tasks = [choose_task(seed, doc_id) for doc_id, _ in documents]
    proposals = tally.ask(teacher, [question_prompt(t, f) for t, f in zip(tasks, fitted)],
                          max_new_tokens, "questions")
    picked: list[tuple[int, str]] = []
    for i, reply in enumerate(proposals):
        doc_id = documents[i][0]
        questions = select_question(reply, tally)
        if not questions:
            tally.rejects["no_question"] += 1
            log.info("document %s: no usable question in the teacher reply %r", doc_id, reply.text[:200])
            continue
        picked.append((i, seeded_rng(seed, doc_id, "pick").choice(questions)))
    answers = tally.ask(teacher, [answer_prompt(fitted[i], q) for i, q in picked], max_new_tokens, "answers")
    samples = []
    for (i, question), reply in zip(picked, answers):
        doc_id, text = documents[i]
        answer = tidy_answer(reply, tally)
        reason = check_answer(answer, text)
        if reason:
            tally.rejects[reason] += 1
            log.info("document %s: answer rejected (%s): %r", doc_id, reason, answer[:200])
            continue
        samples.append(Sample(doc_id=doc_id, task=tasks[i], index=0, teacher=teacher.name,
                              user=f"{text}\n\n{question}", answer=answer, question=question))
    return samples
