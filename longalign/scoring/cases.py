"""One scored prompt (a Case), the length calibration every task shares, and case scoring."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from longalign.errors import UserError
from longalign.scoring.matching import exact_match, set_score


@dataclass
class Case:
    """One prompt with its gold answer.

    ``kind`` is ``"exact"`` (the answer must contain ``expected[0]``, see matching.exact_match),
    ``"any"`` (any one of ``expected``) or ``"set"`` (Jaccard of the named items of ``universe``
    against ``expected``, see matching.set_score).
    """

    suite: str
    task: str
    length: int
    index: int
    messages: list[dict]
    expected: list[str]
    kind: str = "exact"
    universe: list[str] = field(default_factory=list)
    depth: float | None = None
    prompt_tokens: int = 0
    answer_tokens: int = 0  # new tokens a correct answer needs (0: the configured budget suffices)
    extra: dict = field(default_factory=dict)

    @property
    def user_text(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


INTRO = "Read the text below carefully; a question about details hidden in it follows the text."


def haystack_messages(text: str, question: str, answer_prefix: str) -> list[dict]:
    """The chat of every haystack task: one shared opening (so prompts share a long token prefix that
    an answerer may cache), the text, the task's question, and an answer prefix to continue."""
    content = f"{INTRO}\n\n<text>\n{text}\n</text>\n\n{question}"
    return [{"role": "user", "content": content}, {"role": "assistant", "content": answer_prefix}]


def score_case(case: Case, answer: str) -> float:
    """The case's score in [0, 1] for ``answer``."""
    if case.kind == "set":
        return set_score(case.expected, case.universe, answer)
    if case.kind == "any":
        return 1.0 if any(exact_match(e, answer) for e in case.expected) else 0.0
    return 1.0 if exact_match(case.expected[0], answer) else 0.0


def rng_for(seed: int, *parts: object) -> random.Random:
    """A Random seeded from ``seed`` and ``parts`` (string seeding is stable across processes)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def fit(build: Callable[[int], Any], count: Callable[[Any], int], target: int,
        guess: int, what: str, max_n: int) -> tuple[int, Any, int]:
    """The largest ``n`` in ``1..max_n`` whose prompt(s) ``build(n)`` count at most ``target`` tokens.

    ``count(build(n))`` must grow monotonically with ``n``. Starts at ``guess`` and gallops, then
    bisects, so a good guess costs only a few tokenisations. Returns ``(n, build(n), tokens)``.
    """
    memo: dict[int, tuple[list[dict], int]] = {}

    def size(n: int) -> int:
        if n not in memo:
            messages = build(n)
            memo[n] = (messages, count(messages))
        return memo[n][1]

    if size(1) > target:
        raise UserError(f"{what}: length {target} is too short for the prompt itself "
                        f"({size(1)} tokens with the smallest filler); raise scoring.lengths")
    n = min(max(1, guess), max_n)
    step = 1
    if size(n) <= target:  # gallop up from a fitting n
        lo, hi = n, None
        while hi is None:
            if lo == max_n:
                return lo, memo[lo][0], memo[lo][1]
            probe = min(lo + step, max_n)
            if size(probe) <= target:
                lo, step = probe, step * 2
            else:
                hi = probe
    else:  # gallop down from a too-long n
        hi, lo = n, None
        while lo is None:
            probe = max(1, hi - step)
            if size(probe) <= target:
                lo = probe
            else:
                hi, step = probe, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo, memo[lo][0], memo[lo][1]
