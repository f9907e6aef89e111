"""Arrow files of the packing stage: the temporary sample store and the packed row shards.

Streaming layout. Pass 1 appends every tokenised sample, in input order, to one temporary Arrow
IPC file (``.samples.arrow`` inside the output's temporary directory, deleted before the output is
renamed into place); only the lengths stay in memory. Pass 2 memory-maps that file and writes the
planned rows in order, a record batch at a time, so peak memory is about one record batch of rows
(at most ``ROWS_PER_RECORD_BATCH`` rows or ``TOKENS_PER_RECORD_BATCH`` tokens) plus the lengths.

Output files ``rows-00000.arrow``, ... are uncompressed Arrow IPC *file* format (Feather v2), so
the training stage memory-maps them without copying. A new file starts, at a micro-batch boundary,
once a file holds ``TOKENS_PER_FILE`` tokens; a micro-batch's rows are consecutive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from longalign.packing.encode import Encoded

ROWS_PER_RECORD_BATCH = 256
TOKENS_PER_RECORD_BATCH = 1 << 23  # 8M tokens (64 MiB of ids + labels)
TOKENS_PER_FILE = 1 << 28  # 256M tokens (2 GiB of ids + labels)

ROW_SCHEMA = pa.schema([
    ("input_ids", pa.large_list(pa.int32())),
    ("labels", pa.large_list(pa.int32())),
    ("seq_lens", pa.list_(pa.int32())),
    ("n_targets", pa.list_(pa.int32())),
    ("sample_ids", pa.list_(pa.string())),
    ("batch", pa.int64()),
])

SAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("input_ids", pa.large_list(pa.int32())),
    ("labels", pa.large_list(pa.int32())),
    ("n_targets", pa.int32()),
])


def _large_list(arrays: Sequence[np.ndarray]) -> pa.LargeListArray:
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


class SampleStore:
    """Append-only temporary Arrow file of tokenised samples (pass 1)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, SAMPLE_SCHEMA)
        self.count = 0

    def append(self, samples: Sequence[Encoded]) -> None:
        if not samples:
            return
        batch = pa.record_batch([
            pa.array([s.id for s in samples], pa.string()),
            _large_list([s.input_ids for s in samples]),
            _large_list([s.labels for s in samples]),
            pa.array([s.n_targets for s in samples], pa.int32()),
        ], schema=SAMPLE_SCHEMA)
        self._writer.write_batch(batch)
        self.count += len(samples)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()

    def open(self) -> pa.Table:
        """The stored samples as one table over a memory map (no copy)."""
        return pa.ipc.open_file(pa.memory_map(str(self.path), "r")).read_all()


def _list(values: pa.Array, counts: Sequence[int]) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _large(values: pa.Array, counts: Sequence[int]) -> pa.LargeListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


def row_record_batch(samples: pa.Table, rows: list[list[int]], batch_ids: list[int]) -> pa.RecordBatch:
    """Build one record batch of packed rows from the sample store.

    ``rows[r]`` lists the sample indices (into ``samples``) of row ``r`` in order.
    """
    flat = [i for row in rows for i in row]
    sub = samples.take(pa.array(flat, pa.int64())).combine_chunks()
    ids = sub.column("input_ids").chunk(0)
    lengths = np.diff(np.asarray(ids.offsets)).astype(np.int32)
    per_row = [len(row) for row in rows]
    row_tokens = np.add.reduceat(lengths, np.cumsum([0] + per_row[:-1])) if flat else []
    return pa.record_batch([
        _large(ids.flatten(), row_tokens),
        _large(sub.column("labels").chunk(0).flatten(), row_tokens),
        _list(pa.array(lengths, pa.int32()), per_row),
        _list(sub.column("n_targets").chunk(0), per_row),
        _list(sub.column("id").chunk(0), per_row),
        pa.array(batch_ids, pa.int64()),
    ], schema=ROW_SCHEMA)


def write_rows(out_dir: Path, samples: pa.Table, lengths: np.ndarray,
               batches: Iterable[list[list[int]]], *,
               rows_per_record_batch: int = ROWS_PER_RECORD_BATCH,
               tokens_per_record_batch: int = TOKENS_PER_RECORD_BATCH,
               tokens_per_file: int = TOKENS_PER_FILE) -> list[str]:
    """Write micro-batches (each a list of rows of sample indices) as ``rows-NNNNN.arrow`` files;
    return the file names. Micro-batch ``k`` of the iteration gets batch index ``k``."""
    names: list[str] = []
    writer: pa.ipc.RecordBatchFileWriter | None = None
    file_tokens = 0
    pending: list[list[int]] = []
    pending_ids: list[int] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_ids, pending_tokens
        if pending:
            assert writer is not None
            writer.write_batch(row_record_batch(samples, pending, pending_ids))
        pending, pending_ids, pending_tokens = [], [], 0

    for k, batch in enumerate(batches):
        if writer is None or file_tokens >= tokens_per_file:
            flush()
            if writer is not None:
                writer.close()
            names.append(f"rows-{len(names):05d}.arrow")
            writer = pa.ipc.new_file(str(out_dir / names[-1]), ROW_SCHEMA)
            file_tokens = 0
        for row in batch:
            tokens = int(lengths[row].sum())
            if pending and (len(pending) >= rows_per_record_batch
                            or pending_tokens + tokens > tokens_per_record_batch):
                flush()
            pending.append(row)
            pending_ids.append(k)
            pending_tokens += tokens
            file_tokens += tokens
    flush()
    if writer is not None:
        writer.close()
    return names


def read_packed(path: str | os.PathLike) -> tuple[dict, list[pa.Table]]:
    """Open a packing-stage output: its ``meta.json`` and one memory-mapped table per
    ``rows-*.arrow`` file (zero-copy; columns as in ``ROW_SCHEMA``)."""
    from longalign.io import read_json, shard_paths

    meta = read_json(Path(path) / "meta.json")
    tables = []
    for p in shard_paths(path, "rows-*.arrow", "packed data"):
        # The tables keep the maps alive; nothing is read until a column is touched.
        tables.append(pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all())
    return meta, tables
