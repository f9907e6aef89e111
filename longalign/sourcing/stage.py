"""The sourcing stage: read sources, clean, deduplicate, count tokens, filter or split, write shards.

Selection order. Every reader lists its candidates cheaply (stdlib groups, file paths, JSONL line
offsets). Without ``max_documents`` the candidates are visited in source order (sources as given,
each in its sorted order). With ``max_documents`` the candidates of all sources are visited in one
shuffled order drawn with ``numpy.random.default_rng(seed).permutation`` and the stage stops as soon
as ``max_documents`` documents passed every check: the same seed and inputs give the same output,
and only the visited candidates are read and tokenised. Memory stays bounded by one batch of texts
plus 8 bytes per candidate (the order) and 32 bytes per distinct document (the dedup digests).
Pieces of a split document count as documents towards ``max_documents``; so that one huge
document cannot fill the quota, a capped run keeps at most ``max(1, max_documents // 4)`` pieces
(its first ones) of any split document and counts the rest as ``unused_after_cap``.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, write_json
from longalign.models import load_tokenizer
from longalign.progress import track
from longalign.sourcing.readers import Reader, Record, Rejection, open_reader
from longalign.sourcing.report import Tally, build_stats, plot_lengths, summary_markdown
from longalign.sourcing.split import split_text
from longalign.sourcing.text import TokenCounter, clean_text, sha256_hex
from longalign.sourcing.writer import ShardWriter

log = logging.getLogger("longalign")

# Reasons that mean an input could not be read as intended; with strict=True the first is fatal.
STRICT_REASONS = {"unreadable", "undecodable", "malformed", "missing_field"}
BATCH_DOCUMENTS = 16  # documents tokenised together
BATCH_CHARS = 8_000_000  # ... unless their text is already this long
PIECE_SHARE = 4  # a capped run takes at most max_documents // PIECE_SHARE pieces of one document


@dataclass
class _Pending:
    spec: str
    record: Record
    text: str
    digest: str


def candidate_order(sizes: list[int], seed: int, shuffle: bool) -> Iterator[tuple[int, int]]:
    """(reader index, candidate index) pairs: source order, or one seeded shuffle over all sources."""
    if not shuffle:
        for r, n in enumerate(sizes):
            for i in range(n):
                yield r, i
        return
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    for g in np.random.default_rng(seed).permutation(int(starts[-1])).tolist():
        r = bisect.bisect_right(starts, g) - 1
        yield r, g - starts[r]


class _Run:
    """State of one run: the tally, the dedup digests and the shard writer."""

    def __init__(self, config: SourcingConfig, counter: TokenCounter, tally: Tally, writer: ShardWriter):
        self.config = config
        self.counter = counter
        self.tally = tally
        self.writer = writer
        self.seen: set[bytes] = set()
        self.pending: list[_Pending] = []
        self.pending_chars = 0

    @property
    def full(self) -> bool:
        cap = self.config.max_documents
        return cap is not None and self.tally.kept >= cap

    def reject(self, spec: str, uri: str, reason: str, detail: str = "") -> None:
        if self.config.strict and reason in STRICT_REASONS:
            raise UserError(f"{spec}: {uri}: {reason} ({detail}); strict mode stops at bad input")
        self.tally.reject(spec, uri, reason, detail)

    def _new_digest(self, text: str) -> tuple[str, bool]:
        digest = sha256_hex(text)
        raw = bytes.fromhex(digest)
        if raw in self.seen:
            return digest, False
        self.seen.add(raw)
        return digest, True

    def take(self, spec: str, item: Record | Rejection) -> None:
        """Check one reader item; usable text waits in the batch for token counting."""
        self.tally.sources[spec].read += 1
        if isinstance(item, Rejection):
            self.reject(spec, item.uri, item.reason, item.detail)
            return
        text, reason, detail = clean_text(item.data)
        if text is None:
            self.reject(spec, item.uri, reason, detail)
            return
        digest, new = self._new_digest(text)
        if not new:
            self.reject(spec, item.uri, "duplicate", f"same text as an earlier document ({digest[:16]})")
            return
        self.pending.append(_Pending(spec, item, text, digest))
        self.pending_chars += len(text)

    def batch_ready(self) -> bool:
        limit = BATCH_DOCUMENTS
        if self.config.max_documents is not None:
            limit = max(1, min(limit, self.config.max_documents - self.tally.kept))
        return len(self.pending) >= limit or self.pending_chars >= BATCH_CHARS

    def flush(self) -> None:
        """Count tokens of the batch, then keep, split or reject each document in order."""
        batch, self.pending, self.pending_chars = self.pending, [], 0
        cfg = self.config
        for doc, n in zip(batch, self.counter.count([d.text for d in batch])):
            uri = doc.record.uri
            if n < cfg.min_tokens:
                self.reject(doc.spec, uri, "too_short", f"{n} tokens < {cfg.min_tokens}")
            elif n <= cfg.max_tokens:
                self.emit(doc, doc.text, n, 0, None)
            elif not cfg.split_long:
                self.reject(doc.spec, uri, "too_long", f"{n} tokens > {cfg.max_tokens}")
            else:
                self.split(doc, n)

    def split(self, doc: _Pending, n_tokens: int) -> None:
        cfg, counts = self.config, self.tally.sources[doc.spec]
        pieces = split_text(doc.text, self.counter, cfg.max_tokens)
        counts.split += 1
        counts.pieces += len(pieces)
        room = len(pieces)
        if cfg.max_documents is not None:
            room = max(1, cfg.max_documents // PIECE_SHARE)
        for part, piece in enumerate(pieces):
            where = f"{doc.record.uri} part {part}/{len(pieces)}"
            if piece.n_tokens > cfg.max_tokens:
                self.reject(doc.spec, where, "too_long", f"{piece.n_tokens} tokens > {cfg.max_tokens}; "
                            "no paragraph or line boundary to cut at")
            elif piece.n_tokens < cfg.min_tokens:
                self.reject(doc.spec, where, "too_short", f"split remainder of {piece.n_tokens} tokens")
            elif not self._new_digest(piece.text)[1]:
                self.reject(doc.spec, where, "duplicate", "same text as an earlier document")
            elif room == 0:
                counts.unused += 1
            else:
                room -= 1
                info = {"part": part, "parts": len(pieces), "char_start": piece.start,
                        "char_end": piece.end, "parent_hash": doc.digest, "parent_tokens": n_tokens}
                self.emit(doc, piece.text, piece.n_tokens, part, info)

    def emit(self, doc: _Pending, text: str, n_tokens: int, part: int, info: dict | None) -> None:
        if self.full:
            self.tally.sources[doc.spec].unused += 1
            return
        metadata: dict[str, Any] = dict(doc.record.metadata)
        if info:
            metadata["split"] = info
        self.writer.add({
            "id": f"{doc.digest[:16]}-{part}",
            "source": doc.spec,
            "uri": doc.record.uri,
            "text": text,
            "n_tokens": int(n_tokens),
            "content_hash": doc.digest if info is None else sha256_hex(text),
            "language": doc.record.language,
            "metadata": json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str),
        })
        self.tally.keep(doc.spec, n_tokens)


def source(
    config: SourcingConfig, model: str, output: str | os.PathLike, *, overwrite: bool = False
) -> dict:
    """Build the long-document corpus described by ``config`` into the directory ``output``.

    Writes ``documents-NNNNN.parquet`` shards, ``stats.json``, ``summary.md`` and ``lengths.png``
    (atomically) and returns the stats. Token lengths are counted with ``model``'s tokenizer.
    Raises UserError for an unknown source scheme, a missing path, bad input in strict mode, or
    when no document is kept (then nothing is written).
    """
    readers: list[Reader] = [open_reader(spec) for spec in config.sources]
    specs = list(dict.fromkeys(config.sources))
    tally = Tally(specs)
    listing_errors = []
    for reader in readers:
        for err in reader.index():
            listing_errors.append((reader.spec, err))
        tally.sources[reader.spec].candidates += len(reader)
    sizes = [len(r) for r in readers]
    log.info("sourcing: %d candidates from %d source(s)", sum(sizes), len(readers))
    counter = TokenCounter(load_tokenizer(model))

    with atomic_dir(output, overwrite=overwrite) as tmp:
        run = _Run(config, counter, tally, ShardWriter(tmp))
        for spec, err in listing_errors:
            run.take(spec, err)
        shuffle = config.max_documents is not None
        visited = 0
        order = candidate_order(sizes, config.seed, shuffle)
        for r, i in track(order, "sourcing", total=sum(sizes)):
            visited += 1
            for item in readers[r].read(i):
                run.take(readers[r].spec, item)
            if run.batch_ready():
                run.flush()
                if run.full:
                    break
        run.flush()  # documents past the cap are only counted as unused
        if tally.kept == 0:
            raise UserError(
                f"no documents kept from {sum(c.read for c in tally.sources.values())} read "
                f"(rejected: {tally.reasons_line()}); see reasons, e.g. the token range "
                f"[{config.min_tokens}, {config.max_tokens}]"
            )
        run.writer.flush()
        selection = {
            "order": "seeded shuffle" if shuffle else "source order",
            "max_documents": config.max_documents, "seed": config.seed,
            "candidates": sum(sizes), "candidates_visited": visited,
            "stopped_early": run.full and visited < sum(sizes),
        }
        stats = build_stats(tally, config, model, selection, run.writer.shards)
        write_json(tmp / "stats.json", stats)
        (tmp / "summary.md").write_text(summary_markdown(stats))
        plot_lengths(tmp / "lengths.png", tally.lengths, config.min_tokens, config.max_tokens)
    log.info("sourcing: kept %d documents (%d tokens); rejected: %s",
             tally.kept, stats["tokens_kept"], tally.reasons_line())
    return stats
