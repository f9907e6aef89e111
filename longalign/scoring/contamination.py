"""The contamination guard: a suite whose task format the fine-tuning data contained.

The generation stage writes a ``task`` per chat (``kv_retrieval`` and ``needle`` for its synthetic
recall tasks); packing counts them into ``data_tasks`` of its stats and meta.json, training copies
them into the model directory's ``stats.json``, and scoring reads them there. A model trained on
JSON key-value retrieval scores well on the recall suite's ``kv`` test for that reason alone, so such
a suite is marked in the report (``scoring.contamination: mark``, the default) or the run is
refused (``refuse``) until the suite is dropped or the marking accepted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longalign.errors import UserError

log = logging.getLogger("longalign")

# training task format -> the (suite, task) pairs of ours that ask the same thing in the same shape
# (task None: the whole suite)
SHARED_FORMATS: dict[str, list[tuple[str, str | None]]] = {
    # a JSON object of UUID keys and values in the text, asked for one key's value
    "kv_retrieval": [("recall", "kv")],
    # one inserted sentence holding the answer, asked for by what it is about
    "needle": [("ruler-needle", None), ("needle", None), ("recall", "multikey")],
}


def training_tasks(model: str) -> dict[str, int] | None:
    """``data_tasks`` of a fine-tuned model directory's stats.json (None when unknown: a hub id, a
    model trained elsewhere, or stats from before the field existed)."""
    path = Path(model) / "stats.json"
    if not path.is_file():
        return None
    try:
        tasks = json.loads(path.read_text(encoding="utf-8")).get("data_tasks")
    except (OSError, ValueError, AttributeError):
        return None
    return {str(k): int(v) for k, v in tasks.items()} if isinstance(tasks, dict) else None


def shared_formats(suites: list[str], tasks: dict[str, int] | None) -> list[dict]:
    """One entry per (suite, task) of ``suites`` whose format the training data contained."""
    found = []
    for trained, samples in sorted((tasks or {}).items()):
        for suite, task in SHARED_FORMATS.get(trained, []):
            if suite in suites and samples > 0:
                found.append({"suite": suite, "task": task, "training_task": trained, "samples": samples})
    return found


def describe(entry: dict) -> str:
    where = entry["suite"] + (f"/{entry['task']}" if entry["task"] else "")
    return f"{where} shares the format of {entry['samples']} {entry['training_task']} training sample(s)"


def guard(suites: list[str], model: str, mode: str) -> dict:
    """The guard's verdict for ``model`` on ``suites``: ``{"data_tasks", "shared", "mode"}``; raises
    UserError in ``refuse`` mode when a suite shares a training format."""
    tasks = training_tasks(model)
    shared = shared_formats(suites, tasks)
    if shared and mode == "refuse":
        raise UserError("contaminated suites: " + "; ".join(describe(e) for e in shared)
                        + " (drop the suite, or set scoring.contamination=mark to score it marked)")
    for entry in shared:
        log.warning("contamination: %s; its score is marked in the report", describe(entry))
    return {"data_tasks": tasks, "shared": shared, "mode": mode}


def contamination_notes(verdict: dict | None) -> list[str]:
    """The report's lines for a guard verdict (empty when nothing is shared)."""
    return [describe(e) for e in (verdict or {}).get("shared", [])]
