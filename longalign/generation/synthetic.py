"""Synthetic exact-answer recall tasks built from a document itself (RULER / HELMET style).

- ``kv_retrieval``: a JSON object of random UUID-like keys and values is inserted into the
  document at a seeded depth; the question names one key; the answer is its value.
- ``needle``: the sentence "The secret passphrase is <word-word-number>." is inserted at a seeded
  depth; the answer is the passphrase.
Insertions go at a line boundary near the chosen depth (10%-90% of the text), so no word is cut.
Everything is drawn from a generator seeded by (seed, doc_id, index): a task does not depend on
which other documents exist or on their order. The reference answer occurs exactly once in the
user message (re-drawn in the unlikely case the document already contains it), and the
assistant message is the reference answer.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from longalign.generation.samples import seeded_rng

SYNTHETIC_TASKS = ("kv_retrieval", "needle")
KV_PAIRS = 8
MIN_DEPTH, MAX_DEPTH = 0.1, 0.9
_WORDS = (
    "amber anchor apple arrow aspen badger basil beacon birch bison cedar cobalt comet copper coral "
    "crane delta ember falcon fern fjord flint garnet glacier granite harbor hazel heron indigo iris "
    "jasper juniper kestrel lagoon lantern larch lemon lilac linen lotus maple marble meadow mesa "
    "mint moss nectar nutmeg oak ochre olive onyx orchid otter pebble pepper pine plum poppy quartz "
    "raven reed river saffron sage salmon sierra silver slate sparrow spruce summit tangerine thistle "
    "tulip tundra umber velvet violet walnut willow wren yarrow zephyr"
).split()


@dataclass(frozen=True)
class SyntheticTask:
    """One recall task: the user message (document with insertion + question) and the answer."""

    task: str
    user: str
    question: str
    reference: str
    depth: float


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _insert(document: str, block: str, depth: float) -> str:
    """Insert ``block`` as its own paragraph at the line boundary nearest to ``depth``."""
    target = int(len(document) * depth)
    before = document.rfind("\n", 0, target)
    after = document.find("\n", target)
    candidates = [p for p in (before, after) if p > 0]
    cut = min(candidates, key=lambda p: abs(p - target)) if candidates else target
    if not candidates:  # a single line: cut at a space instead
        space = document.rfind(" ", 0, target)
        cut = space if space > 0 else target
    return f"{document[:cut].rstrip()}\n\n{block}\n\n{document[cut:].lstrip()}"


def _kv_retrieval(document: str, rng: random.Random) -> tuple[str, str, str]:
    pairs = {}
    while len(pairs) < KV_PAIRS:
        key, value = _uuid(rng), _uuid(rng)
        if key not in document and value not in document:
            pairs[key] = value
    key = rng.choice(sorted(pairs))
    block = "JSON data:\n" + json.dumps(pairs, indent=1)
    question = (f'In the JSON data inserted in the text above, what is the value of the key "{key}"? '
                "Reply with the value only.")
    return block, question, pairs[key]


def _needle(document: str, rng: random.Random) -> tuple[str, str, str]:
    while True:
        first, second = rng.sample(_WORDS, 2)
        passphrase = f"{first}-{second}-{rng.randrange(1000, 10000)}"
        if passphrase not in document:
            break
    block = f"The secret passphrase is {passphrase}."
    question = "What is the secret passphrase mentioned in the text above? Reply with the passphrase only."
    return block, question, passphrase


_BUILDERS = {"kv_retrieval": _kv_retrieval, "needle": _needle}


def synthetic_task(document: str, doc_id: str, index: int, seed: int) -> SyntheticTask:
    """The ``index``-th synthetic task of a document. Kinds alternate per document (starting at a
    seeded kind), so two tasks per document give one of each."""
    offset = seeded_rng(seed, doc_id, "synthetic-kind").randrange(len(SYNTHETIC_TASKS))
    task = SYNTHETIC_TASKS[(offset + index) % len(SYNTHETIC_TASKS)]
    rng = seeded_rng(seed, doc_id, "synthetic", index)
    depth = round(rng.uniform(MIN_DEPTH, MAX_DEPTH), 4)
    block, question, reference = _BUILDERS[task](document, rng)
    user = f"{_insert(document, block, depth)}\n\n{question}"
    return SyntheticTask(task=task, user=user, question=question, reference=reference, depth=depth)
