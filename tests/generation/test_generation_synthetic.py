"""Synthetic recall tasks: exact references an oracle recovers, seeded per (seed, doc, index)."""

import json
import re

import pytest

from longalign.generation.synthetic import SYNTHETIC_TASKS, synthetic_task


def oracle(user: str) -> str:
    """Read the answer off the user message the way a perfect reader would."""
    if "JSON data:" in user:
        start = user.index("JSON data:") + len("JSON data:")
        data, _ = json.JSONDecoder().raw_decode(user[start:].lstrip())
        key = re.search(r'value of the key "([^"]+)"', user).group(1)
        return data[key]
    return re.search(r"The secret passphrase is (\S+)\.\n", user).group(1)


@pytest.mark.parametrize("index", range(6))
def test_reference_present_once_and_oracle_matches(document, index):
    text = document(index)
    task = synthetic_task(text, f"doc-{index}", index, seed=3)
    assert task.task in SYNTHETIC_TASKS
    assert task.user.count(task.reference) == 1
    assert oracle(task.user) == task.reference
    assert task.user.endswith(task.question)
    # The document survives intact around the insertion.
    assert task.user.replace(" ", "").replace("\n", "").count(text.replace(" ", "").replace("\n", "")[:200]) == 1


def test_both_kinds_for_two_tasks_per_document(document):
    kinds = {synthetic_task(document(1), "d", i, seed=0).task for i in range(2)}
    assert kinds == set(SYNTHETIC_TASKS)


def test_insertion_depth_follows_the_seed(document):
    text = document(2, paragraphs=40)
    depths = set()
    for seed in range(6):
        task = synthetic_task(text, "d", 0, seed)
        assert 0.1 <= task.depth <= 0.9
        position = task.user.index(task.reference) / len(task.user)
        assert abs(position - task.depth) < 0.1
        depths.add(task.depth)
    assert len(depths) == 6


def test_deterministic_and_seed_sensitive(document):
    text = document(4)
    assert synthetic_task(text, "x", 0, 7) == synthetic_task(text, "x", 0, 7)
    assert synthetic_task(text, "x", 0, 7).reference != synthetic_task(text, "x", 0, 8).reference
    assert synthetic_task(text, "x", 0, 7).reference != synthetic_task(text, "y", 0, 7).reference


def test_reference_already_in_document_is_redrawn(document):
    text = document(1)
    first = synthetic_task(text, "d", 0, 0)
    second = synthetic_task(text + "\n" + first.reference, "d", 0, 0)
    assert second.reference != first.reference
    assert second.user.count(second.reference) == 1


def test_single_line_document():
    text = "word " * 300
    task = synthetic_task(text, "d", 1, 0)
    assert oracle(task.user) == task.reference
