"""LongAlign's needle test (Needle_test/ of THUDM/LongAlign, after gkamradt's "needle in a haystack").

One fixed sentence, "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park
on a sunny day.", is hidden as its own line at each depth of a haystack, for each context length;
the model is asked "What is the best thing to do in San Francisco? Here is the most relevant
sentence in the context:" (the Claude 2.1 retrieval prompt the paper uses). As in the reference's
``pred.py``, the system instruction, the haystack and the question are one user message:
``<system>\\n<haystack>\\n\\nRead the document and answer: <question>``; the whole chat prompt is
calibrated to at most ``length`` tokens of the scored model's tokenizer.

Scored offline by exact phrase match: 1 when the answer holds "eat a sandwich and sit in Dolores
Park on a sunny day" (normalised as in matching.py), else 0. With a judge configured the answers are
also rated 1-10 by the reference's judge prompt (``needle_judge.py``), as the paper's heatmap is.

The reference grid is 10 lengths from 1,000 to 60,000 tokens (``np.linspace``, rounded) by 10 depths
from 10% to 90%: ``longalign_grid`` gives it, capped at the model's window.
"""

from __future__ import annotations

from typing import Callable, Iterator

from longalign.scoring.cases import Case, fit
from longalign.scoring.chat import count_tokens
from longalign.scoring.haystack import Haystack, weave

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
PHRASE = "eat a sandwich and sit in Dolores Park on a sunny day"
QUESTION = ("What is the best thing to do in San Francisco? "
            "Here is the most relevant sentence in the context:")
SYSTEM = "You are a helpful AI bot that answers questions for a user. Keep your response short and direct"
REFERENCE_LENGTHS = (1000, 60000, 10)  # config-prompt.yaml: min_len, max_len, interval
REFERENCE_DEPTHS = (10, 90, 10)  # document_depth: min_percent, max_percent, interval (linear)
ANSWER_TOKENS = 40  # new tokens an answer quoting the sentence needs (~22 of SmolLM2's tokenizer)


def _linspace(low: float, high: float, n: int) -> list[float]:
    return [low + (high - low) * i / (n - 1) for i in range(n)] if n > 1 else [low]


def longalign_grid(window: int | None = None) -> tuple[list[int], list[float]]:
    """The reference's lengths (rounded like ``np.round``, half to even) and depths (as fractions),
    lengths above ``window`` dropped (and the window itself added when any was dropped)."""
    lengths = [int(round(x)) for x in _linspace(*REFERENCE_LENGTHS)]
    depths = [round(x) / 100 for x in _linspace(*REFERENCE_DEPTHS)]
    if window is not None and lengths[-1] > window:
        lengths = [x for x in lengths if x < window] + [window]
    return lengths, depths


def needle_messages(text: str) -> list[dict]:
    return [{"role": "user", "content": f"{SYSTEM}\n{text}\n\nRead the document and answer: {QUESTION}"}]


def woven_grid(hay: Haystack, tokenizer, lengths: list[int], depths: list[float], label: str,
               make: Callable[[int, int, float], tuple[str, Callable[[str], list[dict]]]]
               ) -> Iterator[tuple[int, int, float, list[dict], int, dict]]:
    """Walk a length x depth grid of needle prompts (shared by ``needle`` and ``ruler-needle``).

    For each cell, ``make(length, depth_index, depth)`` gives the needle line and the function that
    turns the woven haystack text into the chat; the haystack is the largest line count whose chat
    has at most ``length`` tokens. Yields ``(length, depth_index, depth, messages, prompt_tokens,
    extra)`` with the needle's measured depth and the haystack's line count in ``extra``.
    """
    per_line = max(hay.tokens(len(hay)) / max(len(hay), 1), 1e-3)
    for length in lengths:
        guess = int(length / per_line)
        for d_index, depth in enumerate(depths):
            needle, to_messages = make(length, d_index, depth)

            def build(n: int, depth: float = depth, needle: str = needle,
                      to_messages=to_messages) -> list[dict]:
                return to_messages(weave(hay, n, [(depth, needle)])[0])

            n, messages, tokens = fit(build, lambda m: count_tokens(tokenizer, m), length, guess,
                                      f"{label} at length {length}", len(hay))
            guess = n
            spot = hay.boundary(n, depth)
            yield length, d_index, depth, messages, tokens, {
                "needle_depth": round(hay.tokens(spot) / max(hay.tokens(n), 1), 4),
                "haystack_lines": n}


def needle_cases(hay: Haystack, tokenizer, lengths: list[int], depths: list[float]) -> list[Case]:
    """One case per (length, depth); nothing is random."""
    return [
        Case(suite="needle", task="needle", length=length, index=d_index, messages=messages,
             expected=[PHRASE], depth=depth, prompt_tokens=tokens, answer_tokens=ANSWER_TOKENS,
             extra=extra)
        for length, d_index, depth, messages, tokens, extra in woven_grid(
            hay, tokenizer, lengths, depths, "needle", lambda *_: (NEEDLE, needle_messages))
    ]
