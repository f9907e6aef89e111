"""Sourcing over many pods: the map step as a stage of its own, its output read by the reduce.

``source_shard(config, model, output, index, count)`` runs the map (``longalign.sourcing.
parallel``'s per-document work) over part ``index`` of ``count`` of the candidates and writes
what the reduce needs, one row per reader item, to ``output/prepared.parquet`` plus
``output/part.json`` (which candidates it covers). ``longalign.sourcing.source(..., parts=[...])``
is the reduce: it walks the parts in candidate order instead of reading the sources and makes
the one-process decisions, so its corpus equals the one-pod corpus.

The sources are numbered in segments, in the source order (``Reader.segments``): every candidate
of a reader that reads by number (dir:, stdlib:, git:, hf: folders) is a segment, and so is every
line of a ``.jsonl`` or ``.jsonl.gz`` file (a part decompresses a gzip file up to its first
line: gzip cannot seek); a Parquet row group is one segment, and so is a data file of a
streamed ``hf:`` dataset. The numbers are cut into ``count`` contiguous ranges. Only runs in the source order
qualify (no ``max_documents``, no ``mix``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, read_json, write_json
from longalign.results import StageResult
from longalign.sourcing.base import Item, Reader, Record, Rejection
from longalign.sourcing.parallel import UNIT, Prepared, Preparer

PREPARED = "prepared.parquet"
PART = "part.json"
SCHEMA = pa.schema([
    ("reader", pa.int32()), ("candidate", pa.int64()),
    ("kind", pa.string()),  # record, rejection, or none (a candidate without items)
    ("uri", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("part", pa.bool_()),
    ("text", pa.string()), ("issue", pa.list_(pa.string())), ("digest", pa.string()),
    ("signature", pa.list_(pa.uint64())), ("n_tokens", pa.int64()),
    ("metadata", pa.string()), ("language", pa.string()),
])


def check_order(config: SourcingConfig) -> None:
    if config.max_documents is not None or config.mix is not None:
        raise UserError("sourcing in parts needs the source order: unset max_documents and mix")


def _weights(readers: list[Reader]) -> list[int]:
    """Segments per reader in the part numbering (a reader without segments counts one)."""
    return [1 if n is None else n for n in (r.segments() for r in readers)]


def _candidates(readers: list[Reader], start: int, stop: int) -> Iterator[tuple[int, int, list[Item]]]:
    """(reader index, candidate key, items) of the segments start..stop-1 of the global
    numbering. The key is the candidate's position in this part's run of the reader's segments:
    the reduce only needs consecutive candidates told apart."""
    at = 0
    for k, (reader, n) in enumerate(zip(readers, _weights(readers))):
        lo, hi = max(start, at), min(stop, at + n)
        if lo < hi:
            candidates = (reader.stream(None) if reader.segments() is None
                          else reader.read_segments(lo - at, hi - at))
            for j, items in enumerate(candidates):
                yield k, j, items  # consecutive candidates get different keys
        at += n


def _rows(k: int, i: int, items: list[Item], prepared: list[Optional[Prepared]]) -> list[dict]:
    if not items:
        return [{"reader": k, "candidate": i, "kind": "none"}]
    rows = []
    for item, p in zip(items, prepared):
        row: dict[str, Any] = {"reader": k, "candidate": i, "uri": item.uri}
        if isinstance(item, Rejection):
            row.update(kind="rejection", reason=item.reason, detail=item.detail, part=item.part)
        else:
            assert p is not None
            row.update(kind="record", reason=p.reason, detail=p.detail, text=p.text,
                       issue=list(p.issue) if p.issue else None, digest=p.digest,
                       signature=p.signature, n_tokens=p.n_tokens,
                       metadata=json.dumps(item.metadata, ensure_ascii=False, default=str),
                       language=item.language)
        rows.append(row)
    return rows


def source_shard(config: SourcingConfig, model: str, output: str | os.PathLike, index: int,
                 count: int, *, overwrite: bool = False) -> StageResult:
    """The map step of part ``index`` of ``count`` (see the module docstring) into ``output``."""
    check_order(config)
    if not 0 <= index < count:
        raise UserError(f"part {index} of {count}: the index must be in 0..{count - 1}")
    from longalign.models import load_tokenizer
    from longalign.sourcing.parallel import split_rows
    from longalign.sourcing.readers import open_reader
    from longalign.sourcing.text import TokenCounter

    readers = [open_reader(spec) for spec in config.sources]
    for reader in readers:
        reader.index()
    total = sum(_weights(readers))
    start, stop = split_rows(total, count)[index]
    preparer = Preparer(config, TokenCounter(load_tokenizer(model)))
    candidates = 0
    with atomic_dir(output, overwrite=overwrite) as tmp:
        with pq.ParquetWriter(str(tmp / PREPARED), SCHEMA, compression="zstd") as writer:
            pending: list[tuple[int, int, list[Item]]] = []

            def flush() -> None:
                flat = preparer.prepare([item for _, _, items in pending for item in items])
                rows, at = [], 0
                for k, i, items in pending:
                    rows += _rows(k, i, items, flat[at:at + len(items)])
                    at += len(items)
                writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
                pending.clear()

            for candidate in _candidates(readers, start, stop):
                pending.append(candidate)
                candidates += 1
                if len(pending) >= UNIT:
                    flush()
            if pending:
                flush()
        summary = {"index": index, "count": count, "range": [start, stop], "of": total,
                   "weights": _weights(readers), "candidates": candidates}
        write_json(tmp / PART, summary)
    return StageResult("sourcing part", Path(output), summary,
                       metrics={"candidates": candidates})


def read_parts(parts: list[str | os.PathLike], readers: list[Reader]
               ) -> Iterator[tuple[int, list[Item], list[Optional[Prepared]]]]:
    """The reduce's walk: (reader index, items, Prepared values) of every candidate of the parts,
    in candidate order whatever order the parts come in; counts the readers' visited candidates.
    Parts that do not cover the candidates without gaps are a UserError."""
    found = []
    for part in parts:
        try:
            found.append((read_json(Path(part) / PART), Path(part)))
        except (OSError, ValueError) as exc:
            raise UserError(f"{part} is not a sourcing part ({exc})") from None
    found.sort(key=lambda f: f[0]["range"][0])
    total = sum(_weights(readers))
    if any(f[0].get("weights") not in (None, _weights(readers)) for f in found):
        raise UserError("the sources changed between the parts and the join (other candidate "
                        "counts per source): run the parts again")
    ends = [0] + [f[0]["range"][1] for f in found]
    if [f[0]["range"][0] for f in found] != ends[:-1] or ends[-1] != total or any(
            f[0]["of"] != total for f in found):
        raise UserError("sourcing parts do not cover the candidates of these sources without "
                        "gaps: " + ", ".join(f"{f[0]['range'][0]}-{f[0]['range'][1]}" for f in found)
                        + f" of {total}")
    for _, path in found:
        current: Optional[tuple[int, int]] = None
        items: list[Item] = []
        prepared: list[Optional[Prepared]] = []
        for batch in pq.ParquetFile(path / PREPARED).iter_batches(256):
            for row in batch.to_pylist():
                key = (row["reader"], row["candidate"])
                if key != current:
                    if current is not None:
                        readers[current[0]].visited += 1
                        yield current[0], items, prepared
                    current, items, prepared = key, [], []
                if row["kind"] == "rejection":
                    items.append(Rejection(row["uri"], row["reason"], row["detail"], row["part"]))
                    prepared.append(None)
                elif row["kind"] == "record":
                    items.append(Record(row["uri"], b"", json.loads(row["metadata"]),
                                        row["language"]))
                    sig = row["signature"]
                    prepared.append(Prepared(
                        row["text"], row["reason"], row["detail"],
                        tuple(row["issue"]) if row["issue"] else None, row["digest"] or "",
                        None if sig is None else np.asarray(sig, dtype=np.uint64),
                        row["n_tokens"] or 0))
        if current is not None:
            readers[current[0]].visited += 1
            yield current[0], items, prepared
