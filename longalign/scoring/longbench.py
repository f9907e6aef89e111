"""The LongBench-Chat suite: answer the benchmark's long prompts, then rate the answers with a judge.

Answers follow eval.py's ``get_predictions``: the raw ``prompt`` (no chat template yet) is measured in
the model's tokens without special tokens; when longer than ``max_length`` it keeps its first and
last ``int(max_length / 2)`` tokens, each half decoded on its own (special tokens skipped) and the two
texts joined directly; only then is it wrapped in the model's chat template as one user message.
``max_length`` is ``longbench_chat.context`` (eval.py's default 64,000) or, when the model's window
cannot hold that plus the template and the answer budget, what it can hold (reported). Every answer
is sampled at ``temperature`` with up to ``max_new_tokens`` new tokens and the same fixed seed
(eval.py calls ``seed_everything(42)`` before each question).
"""

from __future__ import annotations

import logging
from pathlib import Path

from longalign.config import LongBenchChatConfig
from longalign.endpoints import Client as Endpoint, journal_name
from longalign.errors import UserError
from longalign.models import cache_root
from longalign.scoring.answerer import Answerer
from longalign.scoring.chat import count_tokens
from longalign.scoring.judge import flatten, judge
from longalign.scoring.longbench_data import Benchmark

log = logging.getLogger("longalign")
SUITE = "longbench-chat"
MIN_BUDGET = 64  # raw-prompt tokens below which the model's window is refused as too small


def judge_endpoint(config: LongBenchChatConfig) -> Endpoint:
    """The judge client, with its durable request journal (a rerun sends only what is not in it)."""
    root = Path(config.cache_dir) if config.cache_dir else cache_root()
    return Endpoint(config.judge, config.judge.model, role="judge", what="scoring.longbench_chat.judge",
                    journal_path=root / "judge" / journal_name("judge", config.judge.model))


def truncate_prompt(tokenizer, prompt: str, max_length: int) -> tuple[str, bool]:
    """eval.py's middle truncation of a raw prompt: ``(text, truncated)``."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if len(ids) <= max_length:
        return prompt, False
    half = int(max_length / 2)
    return (tokenizer.decode(ids[:half], skip_special_tokens=True)
            + tokenizer.decode(ids[-half:], skip_special_tokens=True)), True


def prompt_budget(config: LongBenchChatConfig, tokenizer, window: int) -> dict:
    """How many raw-prompt tokens an answer may see: ``context``, or less when the model's window
    minus the chat template and the answer budget is smaller."""
    template = count_tokens(tokenizer, [{"role": "user", "content": ""}])
    room = window - config.max_new_tokens - template
    if room < MIN_BUDGET:
        raise UserError(f"LongBench-Chat: the model's {window}-token window leaves {room} tokens for the "
                        f"prompt after {config.max_new_tokens} new tokens and {template} template tokens; "
                        "lower scoring.longbench_chat.max_new_tokens")
    budget = min(config.context, room)
    return {"context": config.context, "window": window, "template_tokens": template, "budget": budget,
            "limited_by": "context" if config.context <= room else "window"}


def answer(bench: Benchmark, answerer: Answerer, config: LongBenchChatConfig) -> tuple[list[str], dict]:
    """One answer per question (module docstring) and the truncation facts: ``budget`` (see
    prompt_budget, absent for an answerer without a tokenizer) and ``truncated`` prompts."""
    if hasattr(answerer, "with_generation"):
        who = answerer.with_generation(config.max_new_tokens, config.temperature, config.seed)
    elif hasattr(answerer, "with_budget"):
        who = answerer.with_budget(config.max_new_tokens)
    else:
        who = answerer
    prompts = [q.prompt for q in bench.questions]
    facts: dict = {"truncated": 0}
    tokenizer, window = getattr(who, "tokenizer", None), getattr(who, "window", None)
    if tokenizer is not None and window:
        facts.update(prompt_budget(config, tokenizer, int(window)))
        cut = [truncate_prompt(tokenizer, p, facts["budget"]) for p in prompts]
        prompts = [text for text, _ in cut]
        facts["truncated"] = sum(was for _, was in cut)
        if facts["truncated"]:
            log.info("LongBench-Chat: %d of %d prompts middle-truncated to %d tokens (limited by the %s)",
                     facts["truncated"], len(prompts), facts["budget"], facts["limited_by"])
    got = who.answer([[{"role": "user", "content": p}] for p in prompts])
    if len(got) != len(bench.questions):
        raise RuntimeError(f"the answerer returned {len(got)} answers for {len(bench.questions)} prompts")
    answers = [a if isinstance(a, str) else "" for a in got]
    facts["answerer_truncated"] = getattr(who, "truncated", 0)  # a seam that re-tokenised longer
    empty = sum(not a.strip() for a in answers)
    if empty:
        log.warning("LongBench-Chat: %d of %d answers are empty (judged as they are, as eval.py does)",
                    empty, len(answers))
    return answers, facts


def run_suite(bench: Benchmark, answerer: Answerer, endpoint: Endpoint, config: LongBenchChatConfig,
              seed: int) -> dict:
    """Answers and judge ratings of one model: judge.summarise plus answering facts. ``seed`` seeds
    the judge runs' example orders; answers use ``config.seed``."""
    answers, facts = answer(bench, answerer, config)
    predictions = [flatten(a) if config.flatten_newlines else a.strip() for a in answers]
    before = endpoint.usage.as_dict()
    summary = judge(bench, predictions, endpoint, runs=config.judge_runs, retries=config.judge_retries,
                    seed=seed)
    after = endpoint.usage.as_dict()
    summary["judge_usage"] = {k: round(after[k] - before[k], 6) for k in after if isinstance(after[k], (int, float))}
    summary["truncated"] = facts["truncated"]
    summary["truncation"] = facts
    summary["sampling"] = {"temperature": config.temperature, "max_new_tokens": config.max_new_tokens,
                           "seed": config.seed, "per_question_seed": True}
    summary["cases"] = summary["questions"]
    if summary["score"] is not None:
        log.info("LongBench-Chat score %.2f over %d question(s) (%d unjudged)", summary["score"],
                 summary["scored"], summary["unjudged"])
    return summary
