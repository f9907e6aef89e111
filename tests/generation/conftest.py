"""Fixtures for the generation tests: small corpora in the sourcing stage's schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from longalign.formats import CORPUS, write_rows

def make_document(n: int, paragraphs: int = 12) -> str:
    """A plain-prose document whose sentences differ between documents."""
    parts = []
    for p in range(paragraphs):
        parts.append(
            f"Section {p} of report {n}. The river town number {n} grew around mill {p * 7 + n}. "
            f"Its council met on day {p + 3} to discuss bridges, taxes and the harvest of year {1800 + p}. "
            f"Merchants from district {n * 11 + p} traded wool, salt and copper along the northern road."
        )
    return "\n\n".join(parts)


def write_corpus(directory: Path, texts: list[str], *, ids: list[str] | None = None) -> Path:
    """Write ``documents-00000.parquet`` with the sourcing schema."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).hexdigest()
        rows.append({
            "id": ids[i] if ids else digest[:16], "source": "test:", "uri": f"doc{i}.txt", "text": text,
            "n_tokens": len(text.split()), "content_hash": digest, "language": "en",
            "metadata": json.dumps({"i": i}),
        })
    write_rows(CORPUS, directory, rows)
    return directory


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Five documents of a few hundred words."""
    return write_corpus(tmp_path / "corpus", [make_document(n) for n in range(5)])


class ScriptedTeacher:
    """A Teacher whose replies come from a function of the prompt text (no model)."""

    name = "scripted"
    fingerprint = "scripted|v1"

    def __init__(self, reply, finish_reason: str = "stop"):
        self.reply = reply
        self.finish_reason = finish_reason
        self.prompts: list[list[dict]] = []

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        words = text.split(" ")
        if len(words) <= max_tokens:
            return text, False
        half = max_tokens // 2
        return " ".join(words[:half]) + " [...] " + " ".join(words[-half:]), True

    def complete(self, prompts, max_new_tokens, on_result=None):
        from longalign.generation.interface import Completion

        self.prompts.extend(prompts)
        out = []
        for i, chat in enumerate(prompts):
            text = self.reply(chat[-1]["content"])
            out.append(Completion(text, len(chat[-1]["content"].split()), len(text.split()), self.finish_reason))
            if on_result is not None:
                on_result(i, out[-1])
        return out


@pytest.fixture
def scripted_teacher():
    return ScriptedTeacher


@pytest.fixture
def corpus_writer():
    return write_corpus


@pytest.fixture
def document():
    return make_document


@pytest.fixture(autouse=True)
def journal_home(tmp_path, monkeypatch):
    """The default journal folder ($LONGALIGN_CACHE/generation) of each test, inside its tmp_path."""
    import longalign.generation.stage as stage

    home = tmp_path / "cache"
    monkeypatch.setattr(stage, "cache_root", lambda: home)
    return home / "generation"
