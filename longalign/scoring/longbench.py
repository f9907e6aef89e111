"""The LongBench-Chat suite: answer the benchmark's long prompts, then rate the answers with a judge."""

from __future__ import annotations

import logging
from pathlib import Path

from longalign.config import LongBenchChatConfig
from longalign.models import cache_root
from longalign.scoring.answerer import Answerer
from longalign.scoring.endpoint import CallCache, Endpoint
from longalign.scoring.judge import EMPTY_RATING, flatten, judge
from longalign.scoring.longbench_data import Benchmark

log = logging.getLogger("longalign")
SUITE = "longbench-chat"


def judge_endpoint(config: LongBenchChatConfig) -> Endpoint:
    """The judge client, with its on-disk call cache."""
    root = Path(config.cache_dir) if config.cache_dir else cache_root()
    return Endpoint(config.judge, cache=CallCache(root / "judge"), what="scoring.longbench_chat.judge")


def answer(bench: Benchmark, answerer: Answerer, config: LongBenchChatConfig,
           seed: int) -> tuple[list[str], int]:
    """One answer per question (sampled at ``config.temperature``, up to ``config.max_new_tokens``)
    and how many prompts were middle-truncated."""
    if hasattr(answerer, "with_generation"):
        who = answerer.with_generation(config.max_new_tokens, config.temperature, seed)
    elif hasattr(answerer, "with_budget"):
        who = answerer.with_budget(config.max_new_tokens)
    else:
        who = answerer
    got = who.answer([[{"role": "user", "content": q.prompt}] for q in bench.questions])
    if len(got) != len(bench.questions):
        raise RuntimeError(f"the answerer returned {len(got)} answers for {len(bench.questions)} prompts")
    answers = [a if isinstance(a, str) else "" for a in got]
    truncated = getattr(who, "truncated", 0)
    empty = sum(not a.strip() for a in answers)
    if empty:
        log.warning("LongBench-Chat: %d of %d answers are empty (rated %d without a judge call)",
                    empty, len(answers), EMPTY_RATING)
    return answers, truncated


def run_suite(bench: Benchmark, answerer: Answerer, endpoint: Endpoint, config: LongBenchChatConfig,
              seed: int) -> dict:
    """Answers and judge ratings of one model; the summary of judge.summarise plus answering facts."""
    answers, truncated = answer(bench, answerer, config, seed)
    predictions = [flatten(a) if config.flatten_newlines else a.strip() for a in answers]
    before = endpoint.usage.as_dict()
    summary = judge(bench, predictions, endpoint, runs=config.judge_runs, retries=config.judge_retries,
                    seed=seed)
    after = endpoint.usage.as_dict()
    summary["judge_usage"] = {k: round(after[k] - before[k], 6) for k in after}
    summary["truncated"] = truncated
    summary["cases"] = summary["questions"]
    if summary["score"] is not None:
        log.info("LongBench-Chat score %.2f over %d question(s) (%d unscored)", summary["score"],
                 summary["scored"], summary["unscored"])
    return summary
