"""The LongBench-Chat judge: prompt, rating parser and the two-run protocol of the paper.

Everything here reproduces the benchmark's own script (THUDM/LongAlign, LongBench_Chat/eval.py,
``get_score``) unless said otherwise; docs/scoring.md lists each choice against it.

Prompt: the benchmark's template (prompt_fs.txt) has 9 ``{}`` slots, filled in order with the short
question, the reference answer, three (example answer, human score) pairs, and the answer to rate;
the system prompt is the reference script's. The judge runs at temperature 0.

Rating, as eval.py reads it: the content of the reply's last ``[[...]]`` (``\\[\\[([^\\]]+)\\]\\]``), then
the first number in it (``\\d+\\.\\d+|\\d+``). So ``[[Rating: 8]]`` and ``[[8 out of 10]]`` are 8,
``[[7.5]]`` is 7.5, ``[[-3]]`` is 3, and ``[[0]]`` and ``[[11]]`` are counted as 0 and 11 (the reference
does not clamp; such values are flagged ``out_of_scale`` but kept). A reply with no ``[[...]]``, or
none with a number in its last one, has no rating: eval.py asks again (5 calls in all); we retry
``judge_retries`` more times (default 4: the same 5 calls), and a question run still without a rating
is *unjudged*: reported and counted, never 0, never dropped silently.

Protocol (the paper, section 4: two runs with the examples in shuffled order): ``judge_runs`` runs,
each showing the three examples in a seeded random order. A question's score is the mean of its
judged runs; the headline is the mean over judged questions (the paper's number). ``reference_sum``
is what eval.py prints for one run, the sum of the ratings, averaged over the runs; like eval.py
(which prints ``none``) it is missing when any question run is unjudged.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter, defaultdict
from statistics import mean

from longalign.scoring.cases import rng_for
from longalign.endpoints import Client as Endpoint
from longalign.scoring.longbench_data import EXAMPLES, SYSTEM_PROMPT, Benchmark, Question

log = logging.getLogger("longalign")
_BRACKET = re.compile(r"\[\[([^\]]+)\]\]")  # eval.py's pattern
_NUMBER = re.compile(r"\d+\.\d+|\d+")  # eval.py's pattern (str \d: any Unicode decimal digit)
MIN_RATING, MAX_RATING = 1, 10
TEXT_CHARS = 600  # judge replies and answers are kept this short in scores.json
JUDGED = ("ok", "out_of_scale")  # statuses of a run that has a rating


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
    """``(rating, status)`` for a judge reply, exactly as eval.py reads it (module docstring): status
    ``"ok"``, ``"out_of_scale"`` (a number outside 1..10, still the rating eval.py counts) or
    ``"no_rating"`` (eval.py would ask again; the rating is None)."""
    brackets = _BRACKET.findall(reply or "")
    if not brackets:
        return None, "no_rating"
    numbers = _NUMBER.findall(brackets[-1])
    if not numbers:
        return None, "no_rating"
    value = float(numbers[0])
    if value.is_integer():
        value = float(int(value))
    return value, "ok" if MIN_RATING <= value <= MAX_RATING else "out_of_scale"


def example_order(seed: int, run: int, idx: int) -> list[int]:
    """The order of the three examples in ``run`` for question ``idx``: the paper shuffles them in
    each run. The six orders are put in a seeded random sequence per question and run ``r`` takes the
    ``r``-th, so runs of a question never repeat an order (up to six runs): at temperature 0 a
    repeated prompt would only repeat the judge's reply, and the average of two runs would be one."""
    orders = [list(p) for p in itertools.permutations(range(EXAMPLES))]
    rng_for(seed, "longbench-chat", idx).shuffle(orders)
    return orders[run % len(orders)]


def flatten(prediction: str) -> str:
    """An answer as the reference script judges it: stripped, newlines turned into spaces, stripped
    again (eval.py writes ``response.strip().replace('\\n', ' ')`` as a line and reads it back with
    ``line.strip()``)."""
    return prediction.strip().replace("\n", " ").strip()


def judge(bench: Benchmark, predictions: list[str], endpoint: Endpoint, *, runs: int, retries: int,
          seed: int) -> dict:
    """Rate every prediction ``runs`` times and summarise (see the module docstring). An empty
    answer is judged like any other (eval.py sends it too) and counted."""
    questions = bench.questions
    state: dict[tuple[int, int], dict] = {}
    pending: list[tuple[int, int]] = []
    for q, prediction in enumerate(predictions):
        for run in range(runs):
            order = example_order(seed, run, questions[q].idx)
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
                entry["rating"], entry["status"] = parse_rating(reply.text)
                entry["reply"] = reply.text[-TEXT_CHARS:]
            if entry["status"] not in JUDGED:
                retry.append(job)
        pending = retry
    for job in pending:
        log.warning("LongBench-Chat question %d run %d: unjudged after %d judge call(s) (%s)",
                    questions[job[0]].idx, job[1], state[job]["attempts"], state[job]["status"])
    return summarise(bench, predictions, state, runs)


def summarise(bench: Benchmark, predictions: list[str], state: dict, runs: int) -> dict:
    rows = []
    for q, (question, prediction) in enumerate(zip(bench.questions, predictions)):
        entries = [state[q, run] for run in range(runs)]
        judged = [e["rating"] for e in entries if e["status"] in JUDGED]
        rows.append({
            "idx": question.idx, "language": question.language, "query": question.query[:TEXT_CHARS],
            "answer": prediction[:TEXT_CHARS], "empty": not prediction.strip(),
            "ratings": [e["rating"] for e in entries], "statuses": [e["status"] for e in entries],
            "orders": [e["order"] for e in entries], "attempts": [e["attempts"] for e in entries],
            "replies": [e["reply"][-TEXT_CHARS:] for e in entries],
            # the mean of the runs that have a rating: one judged run of two counts in full
            "score": mean(judged) if judged else None,
        })
    scored = [r for r in rows if r["score"] is not None]
    per_run = []
    for run in range(runs):
        ratings = [r["ratings"][run] for r in rows if r["statuses"][run] in JUDGED]
        per_run.append({"run": run, "order": "shuffled", "mean": mean(ratings) if ratings else None,
                        "sum": sum(ratings), "judged": len(ratings), "unjudged": len(rows) - len(ratings)})
    languages: dict[str, list[float]] = defaultdict(list)
    for r in scored:
        languages[r["language"]].append(r["score"])
    statuses = Counter(s for r in rows for s in r["statuses"])
    complete = all(run["unjudged"] == 0 for run in per_run)
    return {
        "score": mean(r["score"] for r in scored) if scored else None,
        "questions": len(rows), "scored": len(scored), "unjudged": len(rows) - len(scored),
        "unjudged_runs": sum(run["unjudged"] for run in per_run),
        "complete": complete,
        # eval.py prints one run's sum (or "none" when a question has no rating): the runs' mean sum
        "reference_sum": mean(run["sum"] for run in per_run) if complete else None,
        "runs": per_run,
        "languages": {lang: {"score": mean(v), "questions": len(v)} for lang, v in sorted(languages.items())},
        "statuses": dict(sorted(statuses.items())),
        "out_of_scale": statuses.get("out_of_scale", 0),
        "empty_answers": sum(r["empty"] for r in rows),
        "answers": rows,
    }
