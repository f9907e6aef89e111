"""LongAlign's needle answers rated by a judge, as the paper's heatmap is (1-10 per cell).

The judge messages are those of THUDM/LongAlign ``Needle_test/eval.py`` (commit 450ecc8, Apache-2.0):
its system prompt, its user template with its one criterion ("accuracy", rendered by its
``get_criteria``), the needle sentence as the ground truth (with the newlines around it, as in
``config-eval.yaml``) and the retrieval question without Claude's answer lead-in. The rating is the
first ``[[N]]`` of the reply (``re.search(r"\\[\\[(\\d+)\\]\\]")``, as that script does); a reply without
one is unjudged (counted, never 0). Temperature 0; calls go through the LongBench-Chat judge's
endpoint and cache.
"""

from __future__ import annotations

import re
from collections import defaultdict
from statistics import mean

from longalign.endpoints import Client as Endpoint
from longalign.scoring.needle import NEEDLE

SYSTEM = "You are a helpful assistant."
REFERENCE = f"\n{NEEDLE}\n"
QUESTION = "What is the best thing to do in San Francisco?"
CRITERIA = (
    "For this evaluation, you should primarily consider the following criteria:\naccuracy: \n"
    "    Score 1: The answer is completely unrelated to the reference.\n"
    "    Score 3: The answer has minor relevance but does not align with the reference.\n"
    "    Score 5: The answer has moderate relevance but contains inaccuracies.\n"
    "    Score 7: The answer aligns with the reference but has minor omissions.\n"
    "    Score 10: The answer is completely accurate and aligns perfectly with the reference.\n"
    "    Only respond with a numberical score\n    \n"
)
TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided "
    "by an AI assistant to the user question displayed below. {criteria}[Ground truth]\n{reference}\n"
    "Begin your evaluation by providing a short explanation. Be as objective as possible. After "
    "providing your explanation, you must rate the response on a scale of 1 to 10 by strictly "
    "following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n[Question]\n{input}\n\n"
    "[The Start of Assistant's Answer]\n{prediction}\n[The End of Assistant's Answer]"
)
_RATING = re.compile(r"\[\[(\d+)\]\]")


def judge_messages(prediction: str) -> list[dict]:
    user = TEMPLATE.format(criteria=CRITERIA, reference=REFERENCE, input=QUESTION, prediction=prediction)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_rating(reply: str | None) -> int | None:
    found = _RATING.search(reply or "")
    return int(found.group(1)) if found else None


def judge_needle(summary: dict, endpoint: Endpoint) -> None:
    """Add judge ratings to a needle suite summary: per answer ``judge``, per cell ``judge_score``,
    and ``judge_score`` / ``judge_unjudged`` for the suite (means over rated answers)."""
    rows = summary["answers"]
    bodies = [endpoint.body(judge_messages(r["answer"].strip()), temperature=0.0) for r in rows]
    replies = endpoint.complete_many(bodies)
    cells: dict[tuple, list[int]] = defaultdict(list)
    for row, reply in zip(rows, replies):
        row["judge"] = None if reply.error else parse_rating(reply.text)
        if row["judge"] is not None:
            cells[row["length"], row["depth"]].append(row["judge"])
    for cell in summary["cells"]:
        rated = cells.get((cell["length"], cell["depth"]), [])
        cell["judge_score"] = mean(rated) if rated else None
    rated = [r["judge"] for r in rows if r["judge"] is not None]
    summary["judge_score"] = mean(rated) if rated else None
    summary["judge_unjudged"] = len(rows) - len(rated)
