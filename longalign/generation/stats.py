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
                checkpoint: dict | None, prompts: dict | None, short: dict | None) -> dict[str, Any]:
    by_task = Counter(s.task for s in samples)
    by_teacher = Counter(s.teacher for s in samples)
    rejects = {reason: tally.rejects.get(reason, 0) for reason in REJECT_REASONS}
    rejects.update({k: v for k, v in sorted(tally.rejects.items()) if k not in rejects})
    used = len({s.doc_id for s in samples if s.messages is None})
    cost = _cost(config, tally.prompt_tokens, tally.generated_tokens)
    cost_total = _cost(config, tally.prompt_tokens + tally.cached_prompt_tokens,
                       tally.generated_tokens + tally.cached_generated_tokens)
    usage: dict[str, Any] = {
        "calls": tally.calls, "cached": tally.cached, "failed": tally.failed,
        "batches": getattr(teacher, "batches", 0),
        "prompt_tokens": tally.prompt_tokens, "generated_tokens": tally.generated_tokens,
        "cached_prompt_tokens": tally.cached_prompt_tokens, "cached_generated_tokens": tally.cached_generated_tokens,
        "truncated_documents": tally.truncated_documents, "answers_cut": tally.answers_cut,
        "estimated_cost": cost, "estimated_cost_with_checkpoint": cost_total,
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
        "checkpoint": checkpoint,
        "prompts": prompts,
        "short_data": short,
        "seconds": {"total": round(seconds, 3),
                    "teacher_load": round(getattr(teacher, "load_seconds", 0.0), 3),
                    **{k: round(v, 3) for k, v in sorted(tally.seconds.items())}},
    }
    teacher_seconds = tally.seconds["questions"] + tally.seconds["answers"]
    metrics: dict[str, float | int] = {
        "documents_valid": len(documents), "documents_used": used, "samples": len(samples),
        "teacher_calls": tally.calls, "teacher_cached": tally.cached, "teacher_failed": tally.failed,
        "generated_tokens": tally.generated_tokens,
        "generated_tokens_per_second": round(tally.generated_tokens / teacher_seconds, 3) if teacher_seconds else 0,
        "rejects": sum(rejects.values()), "seconds": round(seconds, 3),
    }
    if cost is not None:
        metrics["estimated_cost"] = cost
        metrics["teacher_retries"] = sum(usage.get("retries", {}).values())
    metrics.update({f"samples_{task}": n for task, n in by_task.items()})
    metrics.update({f"rejects_{reason}": n for reason, n in rejects.items()})
    stats["metrics"] = metrics
    return stats
