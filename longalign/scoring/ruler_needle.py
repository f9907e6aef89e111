"""RULER-style needle in a haystack: one sentence with a random 7-digit secret hidden at a depth
(suite ``ruler-needle``; LongAlign's own needle test is ``needle.py``).

For every (length, depth): the prompt is calibrated so that the whole chat prompt (template, haystack,
needle and question) has at most ``length`` tokens of the scored model's tokenizer (the largest line
count that fits); the needle is its own line at the line boundary whose token position is nearest to
``depth`` of the haystack. Scored by exact match of the 7-digit secret in the model's continuation
of the answer prefix "The special magic number for <city> is".
"""

from __future__ import annotations

from longalign.scoring.cases import Case, fit, haystack_messages, rng_for
from longalign.scoring.chat import count_tokens
from longalign.scoring.haystack import Haystack, weave

CITIES = (
    "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Dakar", "Quito", "Tbilisi", "Perth", "Bergen",
    "Cusco", "Sapporo", "Tallinn", "Accra", "Valletta", "Kraków", "Montevideo", "Windhoek", "Hobart",
    "Reykjavik", "Almaty", "Porto", "Cebu", "Tromsø", "Marrakesh", "Ghent", "Chiang Mai", "Split",
    "Zanzibar", "Halifax", "Lviv", "Medellín",
)

QUESTION = ("What is the special magic number for {city} mentioned in the text above? "
            "Answer with the number only.")
ANSWER_PREFIX = "The special magic number for {city} is"


def needle_sentence(city: str, secret: str) -> str:
    return f"The special magic number for {city} is {secret}."


def needle_messages(text: str, city: str) -> list[dict]:
    return haystack_messages(text, QUESTION.format(city=city), ANSWER_PREFIX.format(city=city))


def needle_cases(hay: Haystack, tokenizer, lengths: list[int], depths: list[float],
                 seed: int) -> list[Case]:
    """One case per (length, depth); the secret and city are seeded by (seed, length, depth index)."""
    cases: list[Case] = []
    per_line = max(hay.tokens(len(hay)) / max(len(hay), 1), 1e-3)
    for length in lengths:
        guess = int(length / per_line)
        for d_index, depth in enumerate(depths):
            rng = rng_for(seed, "needle", length, d_index)
            city = rng.choice(CITIES)
            secret = str(rng.randint(1_000_000, 9_999_999))
            needle = needle_sentence(city, secret)

            def build(n: int, depth: float = depth, needle: str = needle, city: str = city) -> list[dict]:
                text, _ = weave(hay, n, [(depth, needle)])
                return needle_messages(text, city)

            n, messages, tokens = fit(build, lambda m: count_tokens(tokenizer, m), length, guess,
                                      f"ruler-needle at length {length}", len(hay))
            guess = n
            spot = hay.boundary(n, depth)
            cases.append(Case(
                suite="ruler-needle", task="needle", length=length, index=d_index, messages=messages,
                expected=[secret], depth=depth, prompt_tokens=tokens,
                extra={"needle": needle, "needle_depth": round(hay.tokens(spot) / max(hay.tokens(n), 1), 4),
                       "haystack_lines": n},
            ))
    return cases
