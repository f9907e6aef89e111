"""Quality gates for teacher output. Each gate returns a reject reason or ``None``.

The rules are deliberately simple and predictable:
- a *question* is kept when it has at least 3 words and either contains ``?`` or starts with an
  interrogative word (what, how, is, does, ...) or an imperative verb (describe, list, summarize,
  ...); anything else (a statement, a heading, chatter) is ``not_a_question``;
- identical questions (case, spacing and trailing punctuation ignored) are ``duplicate_question``;
- an *answer* is rejected as ``empty_answer`` when it has no words, as ``refusal`` when its first
  200 characters refuse ("I cannot", "As an AI", "I'm sorry, but" ...), and as ``copied_document``
  when it repeats COPY_WORDS or more consecutive words of the document verbatim (case-insensitive).
"""

from __future__ import annotations

import re

MIN_QUESTION_WORDS = 3
MAX_QUESTION_CHARS = 500
COPY_WORDS = 30
REFUSAL_WINDOW = 200

INTERROGATIVES = frozenset(
    "what why how who whom whose which when where whether is are was were do does did can could "
    "should would will shall may might must has have had".split()
)
IMPERATIVES = frozenset(
    "describe explain summarize summarise list identify extract compare contrast give provide "
    "outline state name find discuss analyze analyse evaluate determine write tell enumerate define "
    "trace show quote point locate mention specify".split()
)
_REFUSAL = re.compile(
    r"\bas an ai\b"
    r"|\bi (?:cannot|can ?not|can[’']t|am unable to|am not able to|won[’']t be able to|do not have access"
    r"|don[’']t have access)\b"
    r"|\bi[’']m (?:unable|not able)\b"
    r"|^\W*(?:i[’']m sorry|i am sorry|sorry,|i apologi[sz]e|unfortunately, i\b)",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+(?:['’]\w+)?")


def question_key(question: str) -> str:
    """The form under which two questions count as identical."""
    return re.sub(r"\s+", " ", question.lower()).strip().rstrip("?.!: ")


def check_question(question: str) -> str | None:
    """``not_a_question`` unless the text asks or requests something (see module docstring)."""
    words = _WORD.findall(question.lower())
    if len(words) < MIN_QUESTION_WORDS or len(question) > MAX_QUESTION_CHARS:
        return "not_a_question"
    if "?" in question or words[0] in INTERROGATIVES or words[0] in IMPERATIVES:
        return None
    return "not_a_question"


def dedupe_questions(questions: list[str]) -> tuple[list[str], int]:
    """Questions with repeats removed (first kept) and the number removed."""
    seen: set[str] = set()
    kept = []
    for question in questions:
        key = question_key(question)
        if key not in seen:
            seen.add(key)
            kept.append(question)
    return kept, len(questions) - len(kept)


def _shingles(words: list[str], n: int) -> set[int]:
    return {hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


class CopyDetector:
    """Finds answers that repeat a long verbatim stretch of one document."""

    def __init__(self, document: str, n_words: int = COPY_WORDS):
        self.n = n_words
        self._shingles = _shingles(_WORD.findall(document.lower()), n_words)

    def copies(self, answer: str) -> bool:
        words = _WORD.findall(answer.lower())
        return any(
            hash(tuple(words[i:i + self.n])) in self._shingles for i in range(len(words) - self.n + 1)
        )


def check_answer(answer: str, document: str, copy_words: int = COPY_WORDS) -> str | None:
    """A reject reason for an answer to a question about ``document``, or ``None`` to keep it."""
    if not _WORD.search(answer):
        return "empty_answer"
    if _REFUSAL.search(answer[:REFUSAL_WINDOW]):
        return "refusal"
    if CopyDetector(document, copy_words).copies(answer):
        return "copied_document"
    return None
