"""The sourcing stage: read sources, clean, filter, deduplicate, count tokens, filter or split, write.

The stage is a generator pipeline: readers yield one candidate at a time, each document goes
through the checks below, waits in a small batch for token counting, and kept documents go to
the shard writer, which writes a row group at a time. Memory is bounded by one batch of texts,
one row group, and small per-document state (candidate offsets, 32-byte digests, the LSH keys).

Per document, in order: decode and NFC-normalise (``binary``, ``undecodable``, ``empty``),
quality filters (``non_text``, ``repeated_lines``), exact duplicates (``duplicate``), near
duplicates (``near_duplicate``), then token counting (``too_short``, ``too_long`` or split).
With ``workers`` > 1 (and neither ``max_documents`` nor ``mix``) the per-document work runs in
worker processes and the decisions here, in the same order (``longalign.sourcing.parallel``).

Selection order. Without ``max_documents`` and ``mix`` sources are read in order, each in its
sorted order. With ``max_documents`` every source is read in a seeded shuffled order
(``numpy.random.default_rng([seed, k])`` for the k-th source) and the sources are interleaved
by seeded draws weighted by what each has left, so the visited candidates are a random sample of
all; the stage stops as soon as ``max_documents`` documents passed every check. With ``mix`` the
group furthest behind its share supplies the next candidate (``longalign.sourcing.mix``). The
same seed and inputs give the same output. So that one huge document cannot fill a capped run, it
keeps at most ``max(1, max_documents // 4)`` pieces (its first ones) of any split document and
counts the rest as ``unused_after_cap``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.formats import CORPUS, ShardWriter
from longalign.io import atomic_dir
from longalign.models import load_tokenizer
from longalign.progress import track
from longalign.results import StageResult, numeric
from longalign.sourcing.base import interleave
from longalign.sourcing.mix import mix_groups, mixed
from longalign.sourcing.neardup import NearDuplicates
from longalign.sourcing.parallel import Prepared, prepared_candidates
from longalign.sourcing.quality import quality_issue
from longalign.sourcing.readers import Reader, Record, Rejection, open_reader
from longalign.sourcing.shards import check_order, read_parts
from longalign.sourcing.report import Tally, build_stats, plot_lengths, summary_markdown
from longalign.sourcing.split import split_text
from longalign.sourcing.text import TokenCounter, clean_text, sha256_hex

log = logging.getLogger("longalign")

# Reasons that mean an input could not be read as intended; with strict=True the first is fatal.
STRICT_REASONS = {"unreadable", "undecodable", "malformed", "missing_field", "corrupt"}
BATCH_DOCUMENTS = 16  # documents tokenised together
BATCH_CHARS = 2_000_000  # ... unless their text is already this long (bounds tokenizer memory)
PIECE_SHARE = 4  # a capped run takes at most max_documents // PIECE_SHARE pieces of one document
INTERLEAVE_STREAM = 2**32 - 1  # seed-sequence word of the draws between sources
SHARD_ROWS = 1000  # a corpus shard holds at most this many documents
SHARD_BYTES = 128 << 20  # ... or this much UTF-8 text


def corpus_writer(directory) -> ShardWriter:
    """The corpus shard writer: row groups of 64 documents or 16 MiB of text."""
    return ShardWriter(CORPUS, directory, max_rows=SHARD_ROWS, max_bytes=SHARD_BYTES,
                       size=lambda row: len(row["text"].encode("utf-8")))


@dataclass
class _Pending:
    spec: str
    record: Record
    text: str
    digest: str
    n_tokens: Optional[int] = None  # counted by the map step (longalign.sourcing.parallel)


class _Run:
    """State of one run: the tally, the dedup state, the pending batch and the shard writer."""

    def __init__(self, config: SourcingConfig, counter: TokenCounter, tally: Tally,
                 writer: ShardWriter, readers: list[Reader]):
        self.config = config
        self.counter = counter
        self.tally = tally
        self.writer = writer
        self.seen: set[bytes] = set()
        self.near = (NearDuplicates(config.near_dup_threshold, config.near_dup_num_perm,
                                    config.near_dup_ngram) if config.near_dup_threshold else None)
        self.pending: list[_Pending] = []
        self.pending_chars = 0
        self.bounds = {r.spec: (r.source.get("min_tokens", config.min_tokens),
                                r.source.get("max_tokens", config.max_tokens)) for r in readers}
        self.group_of = {r.spec: r.source.group for r in readers}
        self.chars_counted = 0  # characters and tokens of every counted document (for estimates)
        self.tokens_counted = 0

    @property
    def full(self) -> bool:
        cap = self.config.max_documents
        return cap is not None and self.tally.kept >= cap

    def reject(self, spec: str, uri: str, reason: str, detail: str = "", part: bool = False) -> None:
        # Inside a repository, files that are not UTF-8 are expected; strict mode stops only at
        # documents (and at files that cannot be read at all).
        if self.config.strict and reason in STRICT_REASONS and not (part and reason == "undecodable"):
            raise UserError(f"{spec}: {uri}: {reason} ({detail}); strict mode stops at bad input")
        self.tally.reject(spec, uri, reason, detail, part=part)

    def _new_digest(self, text: str, digest: str = "") -> tuple[str, bool]:
        digest = digest or sha256_hex(text)
        raw = bytes.fromhex(digest)
        if raw in self.seen:
            return digest, False
        self.seen.add(raw)
        return digest, True

    def take(self, spec: str, item: Record | Rejection, pre: Optional[Prepared] = None) -> None:
        """Check one reader item; usable text waits in the batch for token counting. ``pre``
        holds what the map step computed for it (``longalign.sourcing.parallel``)."""
        if isinstance(item, Rejection):
            if not item.part:
                self.tally.sources[spec].read += 1
            self.reject(spec, item.uri, item.reason, item.detail, part=item.part)
            return
        self.tally.sources[spec].read += 1
        cfg = self.config
        text, reason, detail = (pre.text, pre.reason, pre.detail) if pre else clean_text(item.data)
        if text is None:
            self.reject(spec, item.uri, reason, detail)
            return
        issue = pre.issue if pre else quality_issue(
            text, cfg.min_alpha_fraction, cfg.max_long_word_fraction, cfg.max_repeated_line_fraction)
        if issue:
            self.reject(spec, item.uri, *issue)
            return
        digest, new = self._new_digest(text, pre.digest if pre else "")
        if not new:
            self.reject(spec, item.uri, "duplicate", f"same text as an earlier document ({digest[:16]})")
            return
        if self.near is not None:
            match = self.near.check_and_add(text, digest[:16], pre.signature if pre else None)
            if match is not None:
                self.reject(spec, item.uri, "near_duplicate", f"similar to an earlier document ({match})")
                return
        self.pending.append(_Pending(spec, item, text, digest, pre.n_tokens if pre else None))
        self.pending_chars += len(text)

    def batch_ready(self) -> bool:
        limit = BATCH_DOCUMENTS
        if self.config.max_documents is not None:
            limit = max(1, min(limit, self.config.max_documents - self.tally.kept))
        return len(self.pending) >= limit or self.pending_chars >= BATCH_CHARS

    def progress(self, group: str) -> float:
        """Kept tokens (or documents) of a group plus an estimate for its pending documents."""
        specs = [s for s, g in self.group_of.items() if g == group]
        pending = [d for d in self.pending if d.spec in specs]
        if self.config.mix_unit == "documents":
            return sum(self.tally.sources[s].kept for s in specs) + len(pending)
        ratio = self.tokens_counted / self.chars_counted if self.chars_counted else 0.25
        return (sum(self.tally.sources[s].tokens for s in specs)
                + ratio * sum(len(d.text) for d in pending))

    def flush(self) -> None:
        """Count tokens of the batch, then keep, split or reject each document in order."""
        batch, self.pending, self.pending_chars = self.pending, [], 0
        counts = ([d.n_tokens for d in batch] if all(d.n_tokens is not None for d in batch)
                  else self.counter.count([d.text for d in batch]))
        for doc, n in zip(batch, counts):
            self.chars_counted += len(doc.text)
            self.tokens_counted += n
            low, high = self.bounds[doc.spec]
            uri = doc.record.uri
            if n < low:
                self.reject(doc.spec, uri, "too_short", f"{n} tokens < {low}")
            elif n <= high:
                self.emit(doc, doc.text, n, 0, None)
            elif not self.config.split_long:
                self.reject(doc.spec, uri, "too_long", f"{n} tokens > {high}")
            else:
                self.split(doc, n)

    def split(self, doc: _Pending, n_tokens: int) -> None:
        cfg, counts = self.config, self.tally.sources[doc.spec]
        low, high = self.bounds[doc.spec]
        pieces = split_text(doc.text, self.counter, high)
        counts.split += 1
        counts.pieces += len(pieces)
        room = len(pieces)
        if cfg.max_documents is not None:
            room = max(1, cfg.max_documents // PIECE_SHARE)
        for part, piece in enumerate(pieces):
            where = f"{doc.record.uri} part {part}/{len(pieces)}"
            if piece.n_tokens > high:
                self.reject(doc.spec, where, "too_long", f"{piece.n_tokens} tokens > {high}; "
                            "no paragraph or line boundary to cut at")
            elif piece.n_tokens < low:
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
        self.tally.keep(doc.spec, n_tokens, piece=info is not None)


def _tag(k: int, stream: Iterator[list]) -> Iterator[tuple[int, list]]:
    for candidate in stream:
        yield k, candidate


def _candidates(readers: list[Reader], config: SourcingConfig, run: _Run,
                stop: dict) -> Iterator[tuple[int, list]]:
    """(reader index, candidate items) in the selection order described in the module docstring."""
    shuffle = config.max_documents is not None or config.mix is not None
    streams = [r.stream(np.random.default_rng([config.seed, k]) if shuffle else None)
               for k, r in enumerate(readers)]
    if config.mix is not None:
        groups = [r.source.group for r in readers]
        yield from mixed(streams, groups, mix_groups(groups, config.mix), run.progress, stop)
        return
    tagged = [_tag(k, s) for k, s in enumerate(streams)]
    rng = np.random.default_rng([config.seed, INTERLEAVE_STREAM]) if shuffle else None
    yield from interleave(tagged, [r.size for r in readers], rng)


def _walk(readers: list[Reader], config: SourcingConfig, model: str, run: _Run,
          stop: dict, parts: list | None = None) -> Iterator[tuple[int, list, list]]:
    """(reader index, candidate items, their map-step values or Nones) in the selection order;
    from the map outputs ``parts`` when given, else the map runs in ``config.workers``
    processes when the order allows it."""
    if parts is not None:
        yield from read_parts(parts, readers)
        return
    workers = config.workers or os.cpu_count() or 1
    if workers > 1 and config.max_documents is None and config.mix is None:
        yield from prepared_candidates(config, model, readers, workers)
        return
    if workers > 1:
        log.info("sourcing: one process (max_documents and mix decide on what was kept so far)")
    for k, items in _candidates(readers, config, run, stop):
        yield k, items, [None] * len(items)


def source(
    config: SourcingConfig, model: str, output: str | os.PathLike, *, overwrite: bool = False,
    fingerprint: dict | None = None, parts: list[str | os.PathLike] | None = None,
) -> StageResult:
    """Build the long-document corpus described by ``config`` into the directory ``output``.

    ``fingerprint`` is the data fingerprint the pipeline computed in front of this stage
    (``longalign.sourcing.fingerprint``); without one it is computed here. It is recorded in the
    stats (``data_fingerprint``) so that the model built from this corpus can carry it.

    ``parts``: the outputs of ``longalign.sourcing.shards.source_shard`` over these sources (the
    map of a run over many pods); the stage then reads them instead of the sources.

    Writes ``documents-NNNNN.parquet`` shards, ``stats.json``, ``summary.md`` and ``lengths.png``
    (atomically) and returns the StageResult. Token lengths are counted with ``model``'s tokenizer.
    Raises UserError for an unknown source scheme, a missing path, a bad mix, bad input in strict
    mode, or when no document is kept (then ``output`` holds only stats.json, result.json and
    summary.md with the reasons, and a rerun replaces them without --overwrite).
    """
    readers: list[Reader] = [open_reader(spec) for spec in config.sources]
    if parts is not None:
        check_order(config)
    if not fingerprint:
        from longalign.sourcing.fingerprint import fingerprint as compute

        fingerprint = compute(config)
    if config.mix is not None:
        mix_groups([r.source.group for r in readers], config.mix)  # fail before any work
    tally = Tally(list(dict.fromkeys(config.sources)))
    listing_errors = []
    for reader in readers:
        for err in reader.index():
            listing_errors.append((reader.spec, err))
        tally.add_candidates(reader.spec, reader.size)
    sizes = [r.size for r in readers]
    known: Optional[int] = None if None in sizes else sum(sizes)
    log.info("sourcing: %s candidates from %d source(s)", known if known is not None else "?", len(readers))
    counter = TokenCounter(load_tokenizer(model))

    with atomic_dir(output, overwrite=overwrite or _failed_report(output)) as tmp:
        run = _Run(config, counter, tally, corpus_writer(tmp), readers)
        for spec, err in listing_errors:
            run.take(spec, err)
        stop: dict = {"stopped_by": None}
        for k, items, prepared in track(_walk(readers, config, model, run, stop, parts),
                                        "sourcing", total=known):
            for item, pre in zip(items, prepared):
                run.take(readers[k].spec, item, pre)
            if run.batch_ready():
                run.flush()
                if run.full:
                    stop["stopped_by"] = "max_documents"
                    break
        run.flush()  # documents past the cap are only counted as unused
        if run.full and stop["stopped_by"] is None:
            stop["stopped_by"] = "max_documents"
        run.writer.flush()
        visited = sum(r.visited for r in readers)
        selection = {
            "order": ("mix" if config.mix is not None else "seeded shuffle"
                      if config.max_documents is not None else "source order"),
            "max_documents": config.max_documents, "seed": config.seed,
            "candidates": known, "candidates_visited": visited,
            "stopped_early": stop["stopped_by"] is not None and (known is None or visited < known),
            "stopped_by": stop["stopped_by"],
        }
        if config.mix is not None:
            selection["mix"] = _mix_report(config, readers, tally)
        low = min(b[0] for b in run.bounds.values())
        high = max(b[1] for b in run.bounds.values())
        stats = build_stats(tally, config, model, selection, run.writer.shards, (low, high))
        stats["data_fingerprint"] = fingerprint
        result = StageResult("sourcing", Path(output), stats, metrics=numeric(stats["metrics"]),
                             headline={k: stats[k] for k in ("documents_kept", "tokens_kept")},
                             summary="summary.md")
        result.write(tmp)
        (tmp / "summary.md").write_text(summary_markdown(stats))
        if tally.kept:
            plot_lengths(tmp / "lengths.png", tally.lengths, low, high)
    if tally.kept == 0:  # the report stays (a rerun may replace it), no corpus is written
        raise UserError(f"{nothing_kept(tally, config)}; counts and examples in {Path(output) / 'stats.json'}")
    log.info("sourcing: kept %d documents (%d tokens); rejected: %s",
             tally.kept, stats["tokens_kept"], tally.reasons_line())
    return result


def nothing_kept(tally: Tally, config: SourcingConfig) -> str:
    """The error line when no document was kept: the real reasons, most frequent first."""
    read = sum(c.read for c in tally.sources.values())
    if read == 0:
        return "no documents kept: the sources listed nothing to read"
    rejected = tally.rejected_total()
    line = f"no documents kept from {read} read (rejected: {tally.reasons_line()})"
    if rejected.get("too_short") or rejected.get("too_long"):
        line += f"; token range [{config.min_tokens}, {config.max_tokens}]"
    return line


def _failed_report(output: str | os.PathLike) -> bool:
    """Whether ``output`` holds only the report of a run that kept nothing (a rerun replaces it)."""
    path = Path(output)
    try:
        names = {p.name for p in path.iterdir()}
        if not names or not names <= {"stats.json", "result.json", "summary.md"}:
            return False
        return json.loads((path / "stats.json").read_text()).get("documents_kept") == 0
    except (OSError, ValueError, AttributeError):
        return False


def _mix_report(config: SourcingConfig, readers: list[Reader], tally: Tally) -> dict:
    shares = mix_groups([r.source.group for r in readers], config.mix or {})
    amount = {g: 0 for g in shares}
    for spec in {r.spec: r for r in readers}:
        group = next(r.source.group for r in readers if r.spec == spec)
        counts = tally.sources[spec]
        amount[group] += counts.kept if config.mix_unit == "documents" else counts.tokens
    total = sum(amount.values()) or 1
    return {"unit": config.mix_unit, "target": shares,
            "actual": {g: amount[g] / total for g in shares}, "kept": amount}
