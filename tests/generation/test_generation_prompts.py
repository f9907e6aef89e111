"""Prompt templates ship with the package and are filled safely."""

from longalign.generation.prompts import TASK_TYPES, answer_prompt, question_prompt
from longalign.generation.selfinstruct import choose_task


def test_every_task_type_has_a_template_with_the_document_first():
    for task in TASK_TYPES:
        (message,) = question_prompt(task, "DOC-TEXT")
        assert message["role"] == "user"
        assert message["content"].startswith("DOC-TEXT")
        assert "5" in message["content"] and "{" not in message["content"]


def test_braces_in_document_or_question_are_left_alone():
    doc = "def f(): return {document} + {question} + {0}"
    (message,) = answer_prompt(doc, "What does {document} do?")
    assert message["content"].startswith(doc)
    assert message["content"].endswith("Question: What does {document} do?")


def test_task_choice_is_seeded_and_covers_all_types():
    picks = [choose_task(0, f"doc{i}") for i in range(200)]
    assert picks == [choose_task(0, f"doc{i}") for i in range(200)]
    assert set(picks) == set(TASK_TYPES)
    assert picks != [choose_task(1, f"doc{i}") for i in range(200)]
