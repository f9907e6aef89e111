"""Prompt templates for the teacher (files under ``prompts/``, shipped as package data).

A template holds the placeholders ``{document}`` and, for answers, ``{question}``. They are filled
in one pass, so braces inside a document or a question are never interpreted. A user folder
(``generation.prompts_dir``) may hold any of the files ``general.txt``, ``summary.txt``,
``reasoning.txt``, ``extraction.txt`` and ``answer.txt``; those replace the built-in ones.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from longalign.errors import UserError

# LongAlign's four task types; each has its own question-proposal template.
TASK_TYPES = ("general", "summary", "reasoning", "extraction")
ANSWER = "answer"
NAMES = (*TASK_TYPES, ANSWER)
_PLACEHOLDER = re.compile(r"\{(document|question)\}")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of the built-in ``prompts/<name>.txt`` (one of TASK_TYPES or ``answer``)."""
    if name not in NAMES:
        raise ValueError(f"no prompt template {name!r}")
    return resources.files(__package__).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")


def _fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text).strip()


class Prompts:
    """The templates of one run: the built-in ones with a user folder's files on top."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.templates = {name: template(name) for name in NAMES}
        self.overridden: list[str] = []
        if directory is not None:
            self._load(Path(directory))

    def _load(self, directory: Path) -> None:
        if not directory.is_dir():
            raise UserError(f"prompts_dir {directory} is not a directory")
        files = sorted(directory.glob("*.txt"))
        unknown = [p.name for p in files if p.stem not in NAMES]
        if unknown:
            raise UserError(f"prompts_dir {directory}: unknown template(s) {', '.join(unknown)}; "
                            f"expected some of {', '.join(n + '.txt' for n in NAMES)}")
        if not files:
            raise UserError(f"prompts_dir {directory} holds no .txt templates")
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"cannot read prompt template {path}: {exc}") from None
            needed = {"document", "question"} if path.stem == ANSWER else {"document"}
            missing = needed - set(_PLACEHOLDER.findall(text))
            if missing:
                raise UserError(f"prompt template {path} lacks {', '.join('{' + m + '}' for m in sorted(missing))}")
            self.templates[path.stem] = text
            self.overridden.append(path.stem)

    @property
    def digest(self) -> str:
        """A short hash of all templates (recorded in the stats)."""
        data = "\x1e".join(f"{n}\x1f{self.templates[n]}" for n in NAMES)
        return hashlib.sha256(data.encode()).hexdigest()[:12]

    def question_prompt(self, task: str, document: str) -> list[dict[str, str]]:
        """The chat asking the teacher for 5 numbered questions of one task type."""
        if task not in TASK_TYPES:
            raise ValueError(f"unknown task type {task!r}")
        return [{"role": "user", "content": _fill(self.templates[task], {"document": document})}]

    def answer_prompt(self, document: str, question: str) -> list[dict[str, str]]:
        """The chat asking the teacher to answer one question with the document in context."""
        text = _fill(self.templates[ANSWER], {"document": document, "question": question})
        return [{"role": "user", "content": text}]


_DEFAULT = None


def default_prompts() -> Prompts:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Prompts()
    return _DEFAULT


def render(name: str, **values: str) -> str:
    """Fill a built-in template; every placeholder it uses must be given."""
    return _fill(template(name), values)


def question_prompt(task: str, document: str) -> list[dict[str, str]]:
    return default_prompts().question_prompt(task, document)


def answer_prompt(document: str, question: str) -> list[dict[str, str]]:
    return default_prompts().answer_prompt(document, question)
