"""Prompt templates for the teacher (files under ``prompts/``, shipped as package data).

A template holds the placeholders ``{document}`` and, for answers, ``{question}``. They are filled
in one pass, so braces inside a document or a question are never interpreted.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

# LongAlign's four task types; each has its own question-proposal template.
TASK_TYPES = ("general", "summary", "reasoning", "extraction")
ANSWER = "answer"
_PLACEHOLDER = re.compile(r"\{(document|question)\}")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of ``prompts/<name>.txt`` (one of TASK_TYPES or ``answer``)."""
    if name not in TASK_TYPES and name != ANSWER:
        raise ValueError(f"no prompt template {name!r}")
    return resources.files(__package__).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """Fill a template; every placeholder it uses must be given."""
    text = template(name)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text).strip()


def question_prompt(task: str, document: str) -> list[dict[str, str]]:
    """The chat asking the teacher for 5 numbered questions of one task type."""
    return [{"role": "user", "content": render(task, document=document)}]


def answer_prompt(document: str, question: str) -> list[dict[str, str]]:
    """The chat asking the teacher to answer one question with the document in context."""
    return [{"role": "user", "content": render(ANSWER, document=document, question=question)}]
