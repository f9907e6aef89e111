"""LongAlign's Self-Instruct over long documents (recipe section 2).

For each document: pick one of four task types (seeded by seed and document id), ask the teacher
for 5 numbered questions about the middle-truncated document, parse them, drop bad ones and ones
already picked for an earlier document, pick one at random, ask the teacher to answer it with the
document in context, gate the answer, and emit a chat whose user message holds the FULL document
and the question. All question prompts go to the teacher as one batch, then all answer prompts as
one batch. With a checkpoint, a request already answered in an earlier (killed) run is served
from it and never sent again; every new reply is written to it as soon as it arrives.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from longalign.generation.checkpoint import Checkpoint, request_key
from longalign.generation.gates import check_answer, check_question, dedupe_questions, question_key
from longalign.generation.parsing import parse_questions
from longalign.generation.prompts import TASK_TYPES, Prompts, default_prompts
from longalign.generation.samples import Sample, seeded_rng
from longalign.generation.teachers import Chat, Completion, Teacher

log = logging.getLogger("longalign")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass
class Tally:
    """What the teacher did and what the gates rejected (reason -> count)."""

    rejects: Counter = field(default_factory=Counter)
    calls: int = 0  # requests answered by the teacher in this run
    cached: int = 0  # requests answered from the checkpoint
    failed: int = 0  # requests the teacher gave up on
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_generated_tokens: int = 0
    truncated_documents: int = 0
    answers_cut: int = 0
    seconds: Counter = field(default_factory=Counter)

    def ask(self, teacher: Teacher, prompts: Sequence[Chat], max_new_tokens: int, phase: str, *,
            meta: Sequence[tuple[str, str]] | None = None, checkpoint: Checkpoint | None = None) -> list[Completion]:
        """Answer ``prompts`` (from the checkpoint where possible), record new replies durably,
        and account for them. ``meta`` holds ``(doc_id, task)`` per prompt for the checkpoint."""
        if not prompts:
            return []
        start = time.monotonic()
        fingerprint = getattr(teacher, "fingerprint", teacher.name)
        keys = [request_key(fingerprint, chat, max_new_tokens) for chat in prompts]
        results: list[Completion | None] = [None] * len(prompts)
        if checkpoint is not None:
            for i, key in enumerate(keys):
                record = checkpoint.get(key)
                if record is not None:
                    results[i] = Completion(record["text"], record["prompt_tokens"], record["completion_tokens"],
                                            record["finish_reason"])
        missing = [i for i, r in enumerate(results) if r is None]
        recorded: set[int] = set()

        def on_result(j: int, completion: Completion) -> None:
            i = missing[j]
            if checkpoint is None or completion.error is not None or i in recorded:
                return
            recorded.add(i)
            doc_id, task = meta[i] if meta else ("", "")
            checkpoint.append({
                "key": keys[i], "doc_id": doc_id, "task": task, "phase": phase, "teacher": teacher.name,
                "text": completion.text, "finish_reason": completion.finish_reason,
                "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            })

        cached = [r for r in results if r is not None]
        self.cached += len(cached)
        self.cached_prompt_tokens += sum(c.prompt_tokens for c in cached)
        self.cached_generated_tokens += sum(c.completion_tokens for c in cached)
        if missing:
            fresh = teacher.complete([prompts[i] for i in missing], max_new_tokens, on_result=on_result)
            for j, completion in enumerate(fresh):
                on_result(j, completion)  # a no-op for replies the teacher already reported
                results[missing[j]] = completion
                if completion.error is not None:
                    self.failed += 1
                    continue
                self.calls += 1
                self.prompt_tokens += completion.prompt_tokens
                self.generated_tokens += completion.completion_tokens
        self.seconds[phase] += time.monotonic() - start
        return results  # type: ignore[return-value]


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
                  context_tokens: int, max_new_tokens: int, tally: Tally, prompts: Prompts | None = None,
                  checkpoint: Checkpoint | None = None) -> list[Sample]:
    """Teacher-written samples (at most one per document) for ``(doc_id, text)`` pairs, in order."""
    prompts = prompts or default_prompts()
    fitted = []
    for _, text in documents:
        short, cut = teacher.truncate(text, context_tokens)
        tally.truncated_documents += cut
        fitted.append(short)
    tasks = [choose_task(seed, doc_id) for doc_id, _ in documents]
    proposals = tally.ask(teacher, [prompts.question_prompt(t, f) for t, f in zip(tasks, fitted)],
                          max_new_tokens, "questions", checkpoint=checkpoint,
                          meta=[(doc_id, task) for (doc_id, _), task in zip(documents, tasks)])
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
                        "answers", checkpoint=checkpoint, meta=[(documents[i][0], tasks[i]) for i, _ in picked])
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
