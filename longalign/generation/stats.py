"""The stage's ``stats.json`` and KFP metrics: counts, rejects, teacher usage and cost."""

from __future__ import annotations

from collections import Counter
from typing import Any

from longalign.config import GenerationConfig
from longalign.generation.samples import Sample
from longalign.generation.selfinstruct import Tally

# Every reject reason, reported even when zero so that the metrics keep the same keys.
REJECT_REASONS = (
    "empty_document", "duplicate_doc_id",  # corpus rows
    "teacher_error", "content_filter",  # requests that failed for good / filtered replies
    "truncated_question", "duplicate_question", "not_a_question", "repeated_question",  # questions
    "no_question",  # documents whose reply held no usable (new) question
    "empty_answer", "refusal", "copied_document",  # answers
)


def _cost(config: GenerationConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    if config.teacher != "openai":
        return None
    return round(config.api.cost(prompt_tokens, completion_tokens), 6)


def build_stats(config: GenerationConfig, *, rows: int, documents: list, teacher_docs: int,
                samples: list[Sample], tally: Tally, teacher: Any, seconds: float,
                facts: dict | None, prompts: dict | None, short: dict | None) -> dict[str, Any]:
    """``facts``: the teacher's journal, failure report and context window (stage._teacher_samples)."""
    by_task = Counter(s.task for s in samples)
    by_teacher = Counter(s.teacher for s in samples)
    rejects = {reason: tally.rejects.get(reason, 0) for reason in REJECT_REASONS}
    rejects.update({k: v for k, v in sorted(tally.rejects.items()) if k not in rejects})
    used = len({s.doc_id for s in samples if s.messages is None})
    u = tally.usage
    cost = _cost(config, u.prompt_tokens, u.completion_tokens)
    cost_total = _cost(config, u.prompt_tokens + u.cached_prompt_tokens,
                       u.completion_tokens + u.cached_completion_tokens)
    facts = facts or {}
    failures = facts.get("failures") or {}
    window = facts.get("window") or {}
    usage: dict[str, Any] = {
        "calls": u.calls, "cached": u.cached, "failed": u.failed, "failures": dict(sorted(u.failures.items())),
        "batches": getattr(teacher, "batches", 0),
        "prompt_tokens": u.prompt_tokens, "generated_tokens": u.completion_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens, "cached_generated_tokens": u.cached_completion_tokens,
        "truncated_documents": tally.truncated_documents, "answers_cut": tally.answers_cut,
        "estimated_cost": cost, "estimated_cost_with_journal": cost_total,
    }
    if hasattr(teacher, "usage_stats"):
        usage.update(teacher.usage_stats())
    stats: dict[str, Any] = {
        "teacher": config.teacher,
        "teacher_model": config.teacher_model if teacher else None,
        "documents": {"rows": rows, "valid": len(documents), "teacher": teacher_docs, "used": used},
        "samples": {"total": len(samples), "by_task": dict(sorted(by_task.items())),
                    "by_teacher": dict(sorted(by_teacher.items()))},
        "rejects": rejects,
        "teacher_usage": usage,
        "journal": facts.get("journal"),
        # teacher requests that failed after retries: rate, limit, reasons; partial: some are missing
        "teacher_failures": failures or None,
        "partial": bool(failures.get("partial")),
        # the teacher's context window: documents longer than document_tokens were middle-truncated
        "teacher_window": window or None,
        "prompts": prompts,
        "short_data": short,
        "seconds": {"total": round(seconds, 3),
                    "teacher_load": round(getattr(teacher, "load_seconds", 0.0), 3),
                    **{k: round(v, 3) for k, v in sorted(tally.seconds.items())}},
    }
    teacher_seconds = tally.seconds["questions"] + tally.seconds["answers"]
    metrics: dict[str, float | int] = {
        "documents_valid": len(documents), "documents_used": used, "samples": len(samples),
        "teacher_calls": u.calls, "teacher_cached": u.cached, "teacher_failed": u.failed,
        "teacher_partial": int(bool(failures.get("partial"))),
        "truncated_documents": tally.truncated_documents,
        "generated_tokens": u.completion_tokens,
        "generated_tokens_per_second": round(u.completion_tokens / teacher_seconds, 3) if teacher_seconds else 0,
        "rejects": sum(rejects.values()), "seconds": round(seconds, 3),
    }
    if cost is not None:
        metrics["estimated_cost"] = cost
        metrics["teacher_retries"] = sum(usage.get("retries", {}).values())
    if window:
        metrics["teacher_window"] = window["tokens"]
    metrics.update({f"samples_{task}": n for task, n in by_task.items()})
    metrics.update({f"rejects_{reason}": n for reason, n in rejects.items()})
    stats["metrics"] = metrics
    return stats
