"""What every reader yields and the interface every reader has.

A reader lists its candidates cheaply in ``index()`` (returning the problems met while listing)
and then ``stream(rng)`` yields one list of items per candidate: the candidate's ``Record``s and
``Rejection``s. With ``rng=None`` candidates come in the reader's natural (sorted) order; with a
``numpy.random.Generator`` in a seeded shuffled order, so that any prefix is a random sample.
``size`` is the number of candidates, or None when a streaming source does not know it.
Readers never hold more than one candidate's text (or one small batch of rows) in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from longalign.sourcing.specs import SourceSpec, parse_spec

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".java": "java", ".js": "javascript", ".ts": "typescript", ".go": "go",
    ".rs": "rust", ".rb": "ruby", ".sh": "shell", ".md": "markdown", ".rst": "restructuredtext",
    ".tex": "latex", ".css": "css", ".sql": "sql", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".kt": "kotlin", ".swift": "swift",
    ".scala": "scala", ".php": "php", ".cs": "csharp", ".jl": "julia", ".r": "r", ".lua": "lua",
}


@dataclass(frozen=True)
class Record:
    """One raw document: ``data`` is text, or bytes still to be decoded as UTF-8."""

    uri: str
    data: Union[str, bytes]
    metadata: dict[str, Any] = field(default_factory=dict)
    language: Optional[str] = None


@dataclass(frozen=True)
class Rejection:
    """Something a reader could not use, with its reason and where it was.

    ``part=True`` marks a piece of a larger document (a file inside a repository document) that
    was left out of it; the document itself goes on.
    """

    uri: str
    reason: str
    detail: str = ""
    part: bool = False


Item = Union[Record, Rejection]


def language_of(path: str | os.PathLike) -> Optional[str]:
    return LANGUAGES.get(Path(path).suffix.lower())


def glob_match(rel: str, pattern: str) -> bool:
    """A pattern without ``/`` matches the file name at any depth; one with ``/`` the whole path.

    ``*`` matches across ``/`` (fnmatch), so ``tests/*`` covers everything under ``tests/``.
    """
    if "/" not in pattern:
        return fnmatchcase(rel.rsplit("/", 1)[-1], pattern)
    return fnmatchcase(rel, pattern.lstrip("/"))


def selected(rel: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(glob_match(rel, p) for p in include):
        return False
    return not any(glob_match(rel, p) for p in exclude)


class Reader:
    """Base of all readers (see the module docstring)."""

    def __init__(self, spec: str, source: Optional[SourceSpec] = None) -> None:
        self.spec = spec
        self.source = source or parse_spec(spec)
        self.visited = 0  # candidates started by stream()

    def index(self) -> list[Rejection]:
        return []

    @property
    def size(self) -> Optional[int]:
        return None

    def stream(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        raise NotImplementedError

    def segments(self) -> Optional[int]:
        """How many segments the reader has after ``index()``, or None when it can only be
        streamed whole. Segments are runs of candidates that can be read on their own
        (``read_segment``); one after another they are ``stream(None)``. A map over many pods cuts
        a source at segment boundaries (``longalign.sourcing.shards``)."""
        return None

    def read_segment(self, s: int) -> Iterator[list[Item]]:
        """The candidates of segment ``s``, in order (does not count them as visited)."""
        raise NotImplementedError

    def read_segments(self, start: int, stop: int) -> Iterator[list[Item]]:
        """The candidates of segments ``start`` to ``stop - 1``, in order (a reader may read a
        run of segments faster than one by one)."""
        for s in range(start, stop):
            yield from self.read_segment(s)


class IndexedReader(Reader):
    """A reader whose candidates can be read by number: shuffling is a permutation of them."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> Optional[int]:
        return len(self)

    def read(self, i: int) -> Iterator[Item]:
        raise NotImplementedError

    def segments(self) -> int:
        return len(self)  # one candidate each

    def read_segment(self, s: int) -> Iterator[list[Item]]:
        yield list(self.read(s))

    def stream(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        n = len(self)
        order = range(n) if rng is None else rng.permutation(n)  # 8 bytes per candidate
        for i in order:
            self.visited += 1
            yield list(self.read(int(i)))


def interleave(streams: list[Iterator[list[Item]]], sizes: list[Optional[int]],
               rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
    """Merge candidate streams: in order without ``rng``, else by seeded draws weighted by what
    each stream has left (a stream of unknown size weighs as much as the largest known one), so
    that merging shuffled streams gives a shuffled whole."""
    if rng is None:
        for stream in streams:
            yield from stream
        return
    left = [s if s is not None else -1 for s in sizes]
    live = list(range(len(streams)))
    while live:
        known = [left[k] for k in live if left[k] >= 0]
        unknown_weight = max(known + [1])
        weights = np.array([max(left[k], 1) if left[k] >= 0 else unknown_weight for k in live], float)
        k = live[int(rng.choice(len(live), p=weights / weights.sum()))] if len(live) > 1 else live[0]
        try:
            yield next(streams[k])
            if left[k] > 0:
                left[k] -= 1
        except StopIteration:
            live.remove(k)
