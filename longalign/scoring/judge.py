"""The LongBench-Chat judge: prompt, rating parser and the two-run protocol of the paper.

Prompt: the benchmark's template (prompt_fs.txt) has 9 ``{}`` slots, filled in order with the short
question, the reference answer, three (example answer, human score) pairs, and the answer to rate;
the system prompt is the reference script's. The judge runs at temperature 0.

Rating: the last ``[[N]]`` of the reply whose N is a number (``[[7]]``, ``[[ 7 ]]``, ``[[7/10]]``,
``[[7.5]]``; full-width brackets and digits count). A reply without one is ``no_rating``; an N outside
1..10 is ``out_of_range``. Both are retried (``judge_retries`` more calls, each its own cache entry)
and, when still unusable, recorded and left out of the mean, never counted as 0.

Protocol: ``judge_runs`` runs (2 in the paper). Run 0 shows the examples in the file's order (what
the reference script does); every later run shows them in a seeded order that differs from it. A
question's score is the mean of its valid ratings; the headline is the mean over questions. An empty
model answer gets the minimum rating 1 without a judge call (and is counted).
"""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from statistics import mean

from longalign.scoring.cases import rng_for
from longalign.scoring.endpoint import Endpoint
from longalign.scoring.longbench_data import EXAMPLES, SYSTEM_PROMPT, Benchmark, Question

log = logging.getLogger("longalign")
_RATING = re.compile(r"\[\[\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_BRACKETS = str.maketrans({"【": "[", "】": "]", "〚": "[", "〛": "]"})
MIN_RATING, MAX_RATING = 1, 10
EMPTY_RATING = MIN_RATING
TEXT_CHARS = 600  # judge replies and answers are kept this short in scores.json


def fill(template: str, values: list) -> str:
    """``template`` with its ``{}`` slots replaced by ``values`` in order (nothing else touched)."""
    pieces = template.split("{}")
    if len(pieces) != len(values) + 1:
        raise ValueError(f"template has {len(pieces) - 1} slots, got {len(values)} values")
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:]):
        out += [str(value), piece]
    return "".join(out)


def judge_prompt(bench: Benchmark, question: Question, prediction: str, order: list[int]) -> str:
    """The judge's user prompt for ``prediction``, examples shown in ``order``."""
    examples = bench.examples[question.idx]
    values: list = [question.query, question.answer]
    for k in order:
        values += list(examples[k])
    return fill(bench.template, values + [prediction])


def judge_messages(bench: Benchmark, question: Question, prediction: str, order: list[int]) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": judge_prompt(bench, question, prediction, order)}]


def parse_rating(reply: str | None) -> tuple[float | None, str]:
    """``(rating, "ok")``, ``(value, "out_of_range")`` or ``(None, "no_rating")`` for a judge reply."""
    text = unicodedata.normalize("NFKC", reply or "").translate(_BRACKETS)
    found = _RATING.findall(text)
    if not found:
        return None, "no_rating"
    value = float(found[-1])
    if value.is_integer():
        value = float(int(value))
    if not MIN_RATING <= value <= MAX_RATING:
        return value, "out_of_range"
    return value, "ok"


def example_order(seed: int, run: int, idx: int) -> list[int]:
    """The order of the examples in ``run`` for question ``idx``: the file's in run 0, else a seeded
    permutation different from it."""
    identity = list(range(EXAMPLES))
    if run == 0:
        return identity
    others = [list(p) for p in itertools.permutations(identity) if list(p) != identity]
    return rng_for(seed, "longbench-chat", run, idx).choice(others)


def flatten(prediction: str) -> str:
    """An answer as the reference script judges it: stripped, newlines turned into spaces."""
    return prediction.strip().replace("\n", " ").strip()


def judge(bench: Benchmark, predictions: list[str], endpoint: Endpoint, *, runs: int, retries: int,
          seed: int) -> dict:
    """Rate every prediction ``runs`` times and summarise (see the module docstring)."""
    questions = bench.questions
    state: dict[tuple[int, int], dict] = {}
    pending: list[tuple[int, int]] = []
    for q, prediction in enumerate(predictions):
        for run in range(runs):
            order = example_order(seed, run, questions[q].idx)
            if not prediction.strip():
                state[q, run] = {"rating": EMPTY_RATING, "status": "empty_answer", "attempts": 0,
                                 "order": order, "reply": ""}
                continue
            state[q, run] = {"rating": None, "status": "pending", "attempts": 0, "order": order,
                             "reply": "", "body": endpoint.body(
                                 judge_messages(bench, questions[q], prediction, order), temperature=0.0)}
            pending.append((q, run))
    for attempt in range(1 + retries):
        if not pending:
            break
        replies = endpoint.complete_many([state[j]["body"] for j in pending], [attempt] * len(pending))
        retry = []
        for job, reply in zip(pending, replies):
            entry = state[job]
            entry["attempts"] += 1
            if reply.error:
                entry["status"], entry["reply"] = "call_failed", reply.error
            else:
                value, status = parse_rating(reply.text)
                entry["status"], entry["reply"] = status, reply.text[-TEXT_CHARS:]
                entry["rating"] = value if status == "ok" else None
                entry["value"] = value
            if entry["status"] != "ok":
                retry.append(job)
        pending = retry
    for job in pending:
        log.warning("LongBench-Chat question %d run %d: no valid rating after %d judge call(s) (%s)",
                    questions[job[0]].idx, job[1], state[job]["attempts"], state[job]["status"])
    return summarise(bench, predictions, state, runs)


def summarise(bench: Benchmark, predictions: list[str], state: dict, runs: int) -> dict:
    rows = []
    for q, (question, prediction) in enumerate(zip(bench.questions, predictions)):
        entries = [state[q, run] for run in range(runs)]
        valid = [e["rating"] for e in entries if e["rating"] is not None]
        rows.append({
            "idx": question.idx, "language": question.language, "query": question.query[:TEXT_CHARS],
            "answer": prediction[:TEXT_CHARS], "empty": not prediction.strip(),
            "ratings": [e["rating"] for e in entries], "statuses": [e["status"] for e in entries],
            "orders": [e["order"] for e in entries], "attempts": [e["attempts"] for e in entries],
            "replies": [e["reply"][-TEXT_CHARS:] for e in entries],
            "invalid_values": [e.get("value") for e in entries if e["status"] == "out_of_range"],
            "score": mean(valid) if valid else None,
        })
    scored = [r for r in rows if r["score"] is not None]
    per_run = []
    for run in range(runs):
        ratings = [r["ratings"][run] for r in rows if r["ratings"][run] is not None]
        per_run.append({"run": run, "order": "file" if run == 0 else "shuffled",
                        "mean": mean(ratings) if ratings else None, "sum": sum(ratings),
                        "rated": len(ratings), "unrated": len(rows) - len(ratings)})
    languages: dict[str, list[float]] = defaultdict(list)
    for r in scored:
        languages[r["language"]].append(r["score"])
    statuses = Counter(s for r in rows for s in r["statuses"])
    complete = all(s in ("ok", "empty_answer") for s in statuses)
    return {
        "score": mean(r["score"] for r in scored) if scored else None,
        "questions": len(rows), "scored": len(scored), "unscored": len(rows) - len(scored),
        "complete": complete,
        # what the reference script prints: the sum of run 0's ratings (file order), if all are valid
        "reference_sum": per_run[0]["sum"] if per_run[0]["unrated"] == 0 else None,
        "runs": per_run,
        "languages": {lang: {"score": mean(v), "questions": len(v)} for lang, v in sorted(languages.items())},
        "statuses": dict(sorted(statuses.items())),
        "empty_answers": sum(r["empty"] for r in rows),
        "answers": rows,
    }
