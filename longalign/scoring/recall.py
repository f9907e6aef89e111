"""Recall tasks in the style of RULER / HELMET, all scored offline by exact match.

- ``kv``: a JSON object of UUID keys -> UUID values, as many pairs as fit the length; ask for the
  value of one key.
- ``multikey``: needles "One of the special magic numbers for <UUID> is: <7 digits>." hidden at
  random depths of the haystack; ask for the number of one key (the other needles are distractors).
- ``vartrack``: chains of assignments ``VAR ABCDE = 12345``, ``VAR FGHIJ = VAR ABCDE``, ... woven in
  order through the haystack; ask which variables hold one chain's value. Scored by the Jaccard overlap
  of the named variables with the chain (matching.set_score): naming another chain's variables costs.

Several questions share one context (like several questions about one document): at a length, the
``samples`` kv questions ask different keys of one JSON object, and the multikey and vartrack
questions ask different needles and chains of one haystack that holds both kinds of inserts (plus
one distractor needle and one distractor chain that are never asked). The prompts then differ only
in their last lines, so a prefix-caching answerer reads each long context once. Every context is
calibrated so that its longest prompt fits ``length`` tokens; every prompt ends in an answer prefix.
"""

from __future__ import annotations

import json
import string

from longalign.scoring.cases import Case, fit, haystack_messages, random_uuid, rng_for
from longalign.scoring.chat import count_tokens
from longalign.scoring.haystack import Haystack, weave

TASKS = ("kv", "multikey", "vartrack")
VT_CHAIN_LENGTH = 4
UUID_ANSWER_TOKENS = 48  # a UUID is ~32-36 tokens of SmolLM2's tokenizer; room for a closing quote


def _counter(tokenizer):
    return lambda prompts: max(count_tokens(tokenizer, m) for m in prompts)


def _spread(rng, samples: int, low: float = 0.05, high: float = 0.95) -> list[float]:
    """One random depth in each of ``samples`` equal slices of [low, high] (questions cover the context)."""
    width = (high - low) / samples
    return [low + width * (i + rng.random()) for i in range(samples)]


def kv_cases(tokenizer, length: int, samples: int, seed: int, guess: int) -> list[Case]:
    rng = rng_for(seed, "recall", "kv", length)
    where = _spread(rng, samples, 0.0, 1.0)
    pairs: list[tuple[str, str]] = []

    def asked(n: int) -> list[int]:
        spots: list[int] = []
        for w in where:  # distinct pairs even when few fit
            spot = min(int(w * n), n - 1)
            while spot in spots and spot + 1 < n:
                spot += 1
            spots.append(spot)
        return spots

    def build(n: int) -> list[list[dict]]:
        while len(pairs) < n:
            pairs.append((random_uuid(rng), random_uuid(rng)))
        data = json.dumps(dict(pairs[:n]), indent=0)
        opening = ("Extract the value corresponding to the specified key in the JSON object below.\n\n"
                   f"JSON data:\n{data}\n\n")
        return [[{"role": "user", "content": f"{opening}Key: \"{pairs[i][0]}\"\n"
                  "What is the value of this key? Answer with the value only."},
                 {"role": "assistant", "content": f"The value of key \"{pairs[i][0]}\" is \""}]
                for i in asked(n)]

    n, prompts, _ = fit(build, _counter(tokenizer), length, guess, f"recall kv at length {length}",
                        10 * length)
    return [Case(suite="recall", task="kv", length=length, index=j, messages=messages,
                 expected=[pairs[i][1]], prompt_tokens=count_tokens(tokenizer, messages),
                 answer_tokens=UUID_ANSWER_TOKENS,
                 extra={"pairs": n, "key": pairs[i][0], "key_depth": round(i / n, 4)})
            for j, (i, messages) in enumerate(zip(asked(n), prompts))]


def _var_name(rng, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in taken:
            taken.add(name)
            return name


def haystack_cases(hay: Haystack, tokenizer, length: int, samples: int, seed: int,
                   guess: int) -> list[Case]:
    """``samples`` multikey and ``samples`` vartrack questions about one haystack."""
    rng = rng_for(seed, "recall", "haystack", length)
    keys = [random_uuid(rng) for _ in range(samples + 1)]
    numbers = [str(rng.randint(1_000_000, 9_999_999)) for _ in keys]
    key_depths = _spread(rng, samples) + [rng.uniform(0.05, 0.95)]  # the last one is never asked
    inserts = [(d, f"One of the special magic numbers for {k} is: {v}.")
               for d, k, v in zip(key_depths, keys, numbers)]
    taken: set[str] = set()
    chains = [[_var_name(rng, taken) for _ in range(VT_CHAIN_LENGTH)] for _ in range(samples + 1)]
    values = rng.sample(range(10_000, 100_000), len(chains))
    for chain, value in zip(chains, values):
        spots = sorted(rng.uniform(0.02, 0.98) for _ in chain)
        inserts.append((spots[0], f"VAR {chain[0]} = {value}"))
        inserts += [(spot, f"VAR {name} = VAR {prev}")
                    for prev, name, spot in zip(chain, chain[1:], spots[1:])]
    questions = [(f"What is the special magic number for {k} mentioned in the text above? "
                  "Answer with the number only.", f"The special magic number for {k} is")
                 for k in keys[:samples]]
    questions += [("Chains of variable assignments (VAR NAME = ...) are hidden in the text above. "
                   f"Find all variables that are assigned the value {v}, directly or through other "
                   "variables. Answer with the variable names only, separated by commas.",
                   f"The variables assigned the value {v} are:") for v in values[:samples]]

    def build(n: int) -> list[list[dict]]:
        text, _ = weave(hay, n, inserts)
        return [haystack_messages(text, question, prefix) for question, prefix in questions]

    n, prompts, _ = fit(build, _counter(tokenizer), length, guess,
                        f"recall multikey/vartrack at length {length}", len(hay))
    universe = [v for chain in chains for v in chain]
    cases = [Case(suite="recall", task="multikey", length=length, index=j, messages=prompts[j],
                  expected=[numbers[j]], prompt_tokens=count_tokens(tokenizer, prompts[j]),
                  extra={"haystack_lines": n, "key": keys[j], "key_depth": round(key_depths[j], 4)})
             for j in range(samples)]
    cases += [Case(suite="recall", task="vartrack", length=length, index=j, messages=prompts[samples + j],
                   expected=list(chains[j]), kind="set", universe=universe,
                   prompt_tokens=count_tokens(tokenizer, prompts[samples + j]),
                   extra={"haystack_lines": n, "value": values[j]})
              for j in range(samples)]
    return cases


def recall_cases(hay: Haystack, tokenizer, lengths: list[int], samples: int, seed: int) -> list[Case]:
    """``samples`` questions per task per length, seeded by (seed, task, length)."""
    per_line = max(hay.tokens(len(hay)) / max(len(hay), 1), 1e-3)
    cases: list[Case] = []
    for length in lengths:
        cases += kv_cases(tokenizer, length, samples, seed, max(1, length // 75))
        cases += haystack_cases(hay, tokenizer, length, samples, seed, int(length / per_line))
    return sorted(cases, key=lambda c: (c.length, TASKS.index(c.task), c.index))
