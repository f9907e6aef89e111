"""Sourcing's map step: per-document work in N worker processes, the decisions in one reduce.

The sourcing stage splits into a map and a reduce. The map is everything about one document that
does not depend on any other: decoding and NFC normalisation, the quality filters, the content
hash, the MinHash signature and the token count (``Prepared``). The reduce is the stage's own
``_Run`` walking the candidates in the one-process order with those values filled in: exact
dedup against the hashes seen so far, the LSH query and insert of the signature (the first
occurrence wins, as in one process), the token bounds, splitting and writing. Since it makes the
same decisions in the same order, the corpus and the stats equal the one-process ones.

Work units are runs of ``UNIT`` candidates of one source. Readers that can read a candidate by
number (dir:, stdlib:, git:, hf: folders) are read in the workers, so file reading and text
extraction run in parallel too; streamed readers (jsonl:, parquet:, streamed hf:) are read in
this process and their records shipped to the workers. Results come back in order, with at most
``2 x workers`` units in flight, so memory stays bounded.

Only runs in the source order qualify: with ``max_documents`` or ``mix`` the stage stops or
chooses on what it has kept so far, so it runs in one process (the stage logs that).
Workers are spawned; each loads the tokenizer once and opens a reader once per source.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from longalign.config import SourcingConfig
from longalign.sourcing.base import IndexedReader, Item, Reader, Record
from longalign.sourcing.neardup import NearDuplicates
from longalign.sourcing.quality import quality_issue
from longalign.sourcing.text import TokenCounter, clean_text, sha256_hex

UNIT = 16  # candidates per work unit


@dataclass
class Prepared:
    """What the map computed for one record (``text`` None: ``reason``/``detail`` say why)."""

    text: Optional[str]
    reason: str = ""
    detail: str = ""
    issue: Optional[tuple[str, str]] = None  # a quality filter's (reason, detail)
    digest: str = ""
    signature: Optional[np.ndarray] = None  # MinHash hash values (near-dup enabled)
    n_tokens: int = 0


class Preparer:
    """Computes ``Prepared`` values for records (one per worker process)."""

    def __init__(self, config: SourcingConfig, counter: TokenCounter) -> None:
        self.config = config
        self.counter = counter
        self.near = (NearDuplicates(config.near_dup_threshold, config.near_dup_num_perm,
                                    config.near_dup_ngram) if config.near_dup_threshold else None)

    def prepare(self, items: list[Item]) -> list[Optional[Prepared]]:
        cfg = self.config
        out: list[Optional[Prepared]] = []
        for item in items:
            if not isinstance(item, Record):
                out.append(None)
                continue
            text, reason, detail = clean_text(item.data)
            if text is None:
                out.append(Prepared(None, reason, detail))
                continue
            p = Prepared(text, issue=quality_issue(text, cfg.min_alpha_fraction,
                                                   cfg.max_long_word_fraction,
                                                   cfg.max_repeated_line_fraction))
            if p.issue is None:
                p.digest = sha256_hex(text)
                if self.near is not None:
                    p.signature = self.near.signature(text).hashvalues
            out.append(p)
        usable = [p for p in out if p is not None and p.text is not None and p.issue is None]
        for p, n in zip(usable, self.counter.count([p.text for p in usable])):
            p.n_tokens = n
        return out


_WORKER: dict[str, Any] = {}  # per worker process: the preparer and the opened readers


def _preparer(config: dict[str, Any], model: str) -> Preparer:
    if "preparer" not in _WORKER:
        from longalign.models import load_tokenizer

        _WORKER["preparer"] = Preparer(SourcingConfig(**config),
                                       TokenCounter(load_tokenizer(model)))
        _WORKER["readers"] = {}
    return _WORKER["preparer"]


def split_rows(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(total)``, sizes differing by at most 1."""
    bounds = [total * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def prepare_unit(config: dict[str, Any], model: str, spec: str, start: int, stop: int,
                 items: Optional[list[list[Item]]], threads: int, listed: int = 0
                 ) -> list[tuple[list[Item], list[Optional[Prepared]]]]:
    """Map step for one unit (runs in a worker): candidates ``start`` to ``stop - 1`` of the
    indexed source ``spec`` (read here; ``listed`` is how many candidates the caller listed, and
    a worker that lists another number stops with a UserError, since candidate numbers would then
    name other documents), or the candidates ``items`` read by the caller; returns each
    candidate's items with their ``Prepared`` values, in order."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    preparer = _preparer(config, model)
    if items is None:
        readers = _WORKER["readers"]
        if spec not in readers:
            from longalign.sourcing.readers import open_reader

            readers[spec] = open_reader(spec)
            readers[spec].index()
        if len(readers[spec]) != listed:
            from longalign.errors import UserError

            raise UserError(f"{spec} changed while it was read ({listed} candidates listed, "
                            f"{len(readers[spec])} now): run again")
        items = [list(readers[spec].read(i)) for i in range(start, stop)]
    flat = preparer.prepare([item for candidate in items for item in candidate])
    out, at = [], 0
    for candidate in items:
        out.append((candidate, flat[at:at + len(candidate)]))
        at += len(candidate)
    return out


def _units(readers: list[Reader]) -> Iterator[tuple[int, int, int, Optional[list[list[Item]]]]]:
    """(reader index, start, stop, items or None) in the source order."""
    for k, reader in enumerate(readers):
        if isinstance(reader, IndexedReader):
            n = len(reader)
            for start in range(0, n, UNIT):
                reader.visited += min(UNIT, n - start)
                yield k, start, min(n, start + UNIT), None
        else:
            chunk: list[list[Item]] = []
            for candidate in reader.stream(None):
                chunk.append(candidate)
                if len(chunk) >= UNIT:
                    yield k, 0, 0, chunk
                    chunk = []
            if chunk:
                yield k, 0, 0, chunk


def prepared_candidates(config: SourcingConfig, model: str, readers: list[Reader], workers: int
                        ) -> Iterator[tuple[int, list[Item], list[Optional[Prepared]]]]:
    """(reader index, candidate items, their Prepared values) of every candidate in the source
    order, the map running in ``workers`` spawned processes."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    dump = config.model_dump()
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        running: deque[tuple[int, Future]] = deque()
        for k, start, stop, items in _units(readers):
            listed = len(readers[k]) if items is None else 0
            running.append((k, pool.submit(prepare_unit, dump, model, readers[k].spec, start,
                                           stop, items, threads, listed)))
            while len(running) > 2 * workers:
                yield from _done(*running.popleft())
        while running:
            yield from _done(*running.popleft())


def _done(k: int, future: Future) -> Iterator[tuple[int, list[Item], list[Optional[Prepared]]]]:
    for items, prepared in future.result():
        yield k, items, prepared
