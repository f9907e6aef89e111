"""The haystack: filler text for the needle and recall prompts, measured in a tokenizer's tokens.

The text comes from the sourcing stage's corpus when one is given, else from Python's own standard
library sources (a fixed, sorted list of files: offline and deterministic on a given Python).
"""

from __future__ import annotations

import bisect
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from longalign.errors import UserError
from longalign.formats import CORPUS, Shards

STDLIB_PACKAGES = ("json", "email", "http", "logging", "urllib", "concurrent")
CHARS_PER_TOKEN = 6  # generous: text is read until this many characters per wanted token


@dataclass
class HaystackSource:
    """Raw haystack text plus where it came from (reported in stats)."""

    text: str
    info: dict = field(default_factory=dict)


def load_source(corpus: str | os.PathLike | None, max_tokens: int) -> HaystackSource:
    """Read enough text for ``max_tokens`` tokens from ``corpus`` (a sourcing output) or the stdlib."""
    want = max(max_tokens, 256) * CHARS_PER_TOKEN
    if corpus is None:
        return _stdlib_source(want)
    table = Shards(CORPUS, corpus).read_table(["text"])
    parts: list[str] = []
    used = empty = 0
    size = 0
    for value in table.column("text").to_pylist():
        if not isinstance(value, str) or not value.strip():
            empty += 1
            continue
        if size < want:
            parts.append(value.strip("\n"))
            size += len(value)
            used += 1
    if not parts:
        raise UserError(f"corpus {corpus} holds no non-empty text to build a haystack from")
    info = {"source": "corpus", "documents": table.num_rows, "documents_used": used,
            "skipped": {"empty_text": empty} if empty else {}}
    return HaystackSource("\n\n".join(parts), info)


def _stdlib_source(want: int) -> HaystackSource:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    files = 0
    size = 0
    for package in STDLIB_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if size >= want:
                break
            text = path.read_text(encoding="utf-8", errors="replace").strip("\n")
            if text:
                parts.append(text)
                size += len(text)
                files += 1
    if not parts:
        raise UserError(f"no Python standard-library sources found under {root} for the haystack")
    return HaystackSource("\n\n".join(parts), {"source": "stdlib", "packages": list(STDLIB_PACKAGES),
                                               "files_used": files})


class Haystack:
    """The source text as lines, with the token position of every line boundary for one tokenizer.

    ``text(n)`` is the first ``n`` lines; ``tokens(n)`` its length in tokens. When the source is too
    short for ``max_tokens`` it is repeated (``repeats`` > 1 is reported).
    """

    def __init__(self, source: str, tokenizer, max_tokens: int):
        if not source.strip():
            raise UserError("the haystack text is empty")
        need = int(max_tokens * 1.1) + 64
        base_tokens = len(tokenizer(source, add_special_tokens=False)["input_ids"])
        self.repeats = max(1, -(-need // max(base_tokens, 1)))
        text = "\n\n".join([source] * self.repeats)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        self.lines = text.split("\n")
        starts = [start for start, _ in enc["offset_mapping"]]
        self.bounds: list[int] = []
        pos = 0
        for line in self.lines:
            self.bounds.append(bisect.bisect_left(starts, pos))
            pos += len(line) + 1
        self.bounds.append(len(starts))

    def __len__(self) -> int:
        return len(self.lines)

    def text(self, n: int, start: int = 0) -> str:
        """Lines ``start .. start+n-1`` joined by newlines."""
        return "\n".join(self.lines[start:start + n])

    def tokens(self, n: int, start: int = 0) -> int:
        """Approximate token count of ``text(n, start)``."""
        return self.bounds[start + n] - self.bounds[start]

    def boundary(self, n: int, fraction: float, start: int = 0) -> int:
        """The line boundary ``b`` in ``0..n`` whose token position is nearest ``fraction`` of ``text(n)``."""
        total = self.tokens(n, start)
        goal = self.bounds[start] + fraction * total
        b = bisect.bisect_left(self.bounds, goal, start, start + n + 1)
        best = min((c for c in (b - 1, b) if start <= c <= start + n),
                   key=lambda c: (abs(self.bounds[c] - goal), c))
        return best - start


def weave(hay: Haystack, n: int, inserts: list[tuple[float, str]], start: int = 0) -> tuple[str, list[int]]:
    """``text(n, start)`` with each ``(fraction, line)`` inserted as its own line at the line boundary
    nearest that fraction of the tokens. Inserts keep their given order at equal boundaries.

    Returns the text and the boundary (in lines of the haystack) chosen for each insert.
    """
    spots = [hay.boundary(n, fraction, start) for fraction, _ in inserts]
    order = sorted(range(len(inserts)), key=lambda i: (spots[i], i))
    lines: list[str] = []
    done = 0
    for i in order:
        lines.extend(hay.lines[start + done:start + spots[i]])
        lines.append(inserts[i][1])
        done = spots[i]
    lines.extend(hay.lines[start + done:start + n])
    return "\n".join(lines), spots
