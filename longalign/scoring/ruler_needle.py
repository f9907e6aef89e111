"""RULER-style needle in a haystack: one sentence with a random 7-digit secret hidden at a depth
(suite ``ruler-needle``; LongAlign's own needle test is ``needle.py``).

For every (length, depth): the prompt is calibrated so that the whole chat prompt (template, haystack,
needle and question) has at most ``length`` tokens of the scored model's tokenizer (the largest line
count that fits); the needle is its own line at the line boundary whose token position is nearest to
``depth`` of the haystack. Scored by exact match of the 7-digit secret in the model's continuation
of the answer prefix "The special magic number for <city> is".
"""

from __future__ import annotations

from longalign.scoring.cases import Case, haystack_messages, rng_for
from longalign.scoring.haystack import Haystack
from longalign.scoring.needle import woven_grid

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
    drawn: dict[tuple[int, int], tuple[str, str]] = {}

    def make(length: int, d_index: int, depth: float):
        rng = rng_for(seed, "needle", length, d_index)
        city = rng.choice(CITIES)
        secret = str(rng.randint(1_000_000, 9_999_999))
        drawn[length, d_index] = (secret, needle_sentence(city, secret))
        return drawn[length, d_index][1], lambda text: needle_messages(text, city)

    cases: list[Case] = []
    for length, d_index, depth, messages, tokens, extra in woven_grid(
            hay, tokenizer, lengths, depths, "ruler-needle", make):
        secret, needle = drawn[length, d_index]
        cases.append(Case(
            suite="ruler-needle", task="needle", length=length, index=d_index, messages=messages,
            expected=[secret], depth=depth, prompt_tokens=tokens, extra={"needle": needle, **extra},
        ))
    return cases
