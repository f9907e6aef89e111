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


def needle_cases(hay: Haystack, tokenizer, lengths: list[int], depths: list[float]) -> list[Case]:
    """One case per (length, depth); nothing is random."""
    cases: list[Case] = []
    per_line = max(hay.tokens(len(hay)) / max(len(hay), 1), 1e-3)
    for length in lengths:
        guess = int(length / per_line)
        for d_index, depth in enumerate(depths):
            def build(n: int, depth: float = depth) -> list[dict]:
                text, _ = weave(hay, n, [(depth, NEEDLE)])
                return needle_messages(text)

            n, messages, tokens = fit(build, lambda m: count_tokens(tokenizer, m), length, guess,
                                      f"needle at length {length}", len(hay))
            guess = n
            spot = hay.boundary(n, depth)
            cases.append(Case(
                suite="needle", task="needle", length=length, index=d_index, messages=messages,
                expected=[PHRASE], depth=depth, prompt_tokens=tokens, answer_tokens=ANSWER_TOKENS,
                extra={"needle_depth": round(hay.tokens(spot) / max(hay.tokens(n), 1), 4),
                       "haystack_lines": n},
            ))
    return cases
