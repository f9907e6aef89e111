"""Files of the packing stage: the temporary sample store and the packed row shards.

Streaming layout. Pass 1 appends every tokenised sample, in input order, to a temporary flat
binary file (``.samples.bin`` inside the output's temporary directory, deleted before the output
is renamed into place): sample ``i`` is its ``n_i`` int32 token ids followed by its ``n_i`` int32
labels, at byte offset ``8 * (n_0 + ... + n_{i-1})``. Sample ids go to ``.ids.bin`` (UTF-8, back
to back). In memory stay only a few numbers per sample: its length, target count, id length and
an id hash (about 24 bytes), which is all that planning needs. Pass 2 reads the samples of each
record batch of rows with positional reads (``os.preadv`` straight into the output buffers; no
memory map, so nothing of the dataset accumulates in the process), so peak memory is about one
record batch of rows (at most ``ROWS_PER_RECORD_BATCH`` rows or ``TOKENS_PER_RECORD_BATCH``
tokens) plus the per-sample numbers.

Output files ``rows-00000.arrow``, ... (``longalign.formats.PACKED``: uncompressed Arrow IPC
files the training stage memory-maps without copying). A new file starts, at a micro-batch
boundary, once a file holds ``PackingConfig.tokens_per_file`` tokens (``TOKENS_PER_FILE`` by
default); a micro-batch's rows are consecutive. Each file can be written on its own (``RowFile``)
from the plan's cut (``cut_files``): the sharded pipelines write them in parallel pods.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from longalign.errors import UserError
from longalign.formats import PACKED
from longalign.packing.encode import Encoded

ROWS_PER_RECORD_BATCH = 256
TOKENS_PER_RECORD_BATCH = 1 << 23  # 8M tokens (64 MiB of ids + labels)
TOKENS_PER_FILE = 1 << 28  # 256M tokens (2 GiB of ids + labels)

def id_hash(sample_id: str) -> int:
    """A 64-bit hash of a sample id (signed, to fit an int64 array)."""
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little",
                          signed=True)


class SampleStore:
    """Append-only temporary store of tokenised samples (pass 1), read back by index (pass 2).

    After ``close()``, ``lengths``, ``targets`` and ``hashes`` are numpy arrays (one entry per
    stored sample, in append order). A store written by another process (a map worker of
    ``longalign.packing.parallel``) is finished with ``finish()``, which saves those arrays next
    to its files (``<name>.index.npy``); ``SampleStore.join`` then opens several such parts as one
    store, their samples in the order of the names given.
    """

    def __init__(self, directory: str | os.PathLike, name: str = ".samples") -> None:
        directory = Path(directory)
        self.path = directory / f"{name}.bin"
        self.ids_path = directory / f"{name}.ids.bin"
        self._tokens = open(self.path, "wb")
        self._ids = open(self.ids_path, "wb")
        self._lengths = array("q")
        self._targets = array("i")
        self._id_sizes = array("i")
        self._hashes = array("q")
        self._fds: list[tuple[int, int]] | None = None
        self._files = [self.path, self.ids_path]  # deleted by release()

    @property
    def count(self) -> int:
        return len(self.lengths) if self._fds is not None else len(self._lengths)

    def append(self, samples: Iterable[Encoded]) -> None:
        for s in samples:
            self._tokens.write(np.ascontiguousarray(s.input_ids, dtype=np.int32).data)
            self._tokens.write(np.ascontiguousarray(s.labels, dtype=np.int32).data)
            raw = s.id.encode()
            self._ids.write(raw)
            self._lengths.append(len(s.input_ids))
            self._targets.append(s.n_targets)
            self._id_sizes.append(len(raw))
            self._hashes.append(id_hash(s.id))

    def _index(self) -> np.ndarray:
        """(4, count) int64: lengths, targets, id sizes, id hashes of the appended samples."""
        self._tokens.close()
        self._ids.close()
        return np.stack([np.frombuffer(a, dtype=t).astype(np.int64) for a, t in (
            (self._lengths, np.int64), (self._targets, np.int32), (self._id_sizes, np.int32),
            (self._hashes, np.int64))]) if len(self._lengths) else np.zeros((4, 0), np.int64)

    def finish(self) -> int:
        """Finish writing a part for ``join`` (saves ``<name>.index.npy``); returns its sample
        count. The store cannot be read afterwards; ``join`` the part instead."""
        index = self._index()
        np.save(self.path.with_name(self.path.name[:-len(".bin")] + ".index.npy"), index,
                allow_pickle=False)
        return index.shape[1]

    def close(self) -> None:
        """Finish writing; make the per-sample arrays available and open the files for reading."""
        if self._fds is not None:
            return
        self._attach([(self.path, self.ids_path, self._index())])

    @classmethod
    def join(cls, stems: Sequence[str | os.PathLike], *, owned: bool = True) -> "SampleStore":
        """Open the finished parts ``stems`` (``directory / name`` of each) as one closed store:
        the samples of ``stems[0]`` first, then those of ``stems[1]``, ... ``release()`` deletes
        every part's files when ``owned`` (else it only closes them: inputs of another step)."""
        stems = [Path(s) for s in stems]
        store = cls.__new__(cls)
        parts = []
        for stem in stems:
            index_path = stem.with_name(stem.name + ".index.npy")
            try:
                parts.append((stem.with_name(stem.name + ".bin"),
                              stem.with_name(stem.name + ".ids.bin"),
                              np.load(index_path, allow_pickle=False)))
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read the packing part {stem}: {exc}") from None
        store.path = parts[0][0] if parts else Path(".samples.bin")
        store._attach(parts)
        store._files += [s.with_name(s.name + ".index.npy") for s in stems]
        if not owned:
            store._files = []
        return store

    def _attach(self, parts: list[tuple[Path, Path, np.ndarray]]) -> None:
        """The closed state: per-sample arrays over all parts and one pair of read fds per part."""
        for name in ("_lengths", "_targets", "_hashes", "_id_sizes"):
            self.__dict__.pop(name, None)
        index = np.concatenate([p[2] for p in parts], axis=1) if parts else np.zeros((4, 0), np.int64)
        self.lengths = index[0].copy()
        self.targets = index[1].astype(np.int32)
        self.hashes = index[3].copy()
        # where each sample starts in its part's token file (in tokens) and ids file (in bytes)
        self._token_start = np.concatenate(
            [np.cumsum(p[2][0]) - p[2][0] for p in parts] or [[]]).astype(np.int64)
        self._id_start = np.concatenate(
            [np.cumsum(p[2][2]) - p[2][2] for p in parts] or [[]]).astype(np.int64)
        self._id_size = index[2].astype(np.int32)
        self._part = np.repeat(np.arange(len(parts), dtype=np.int32),
                               [p[2].shape[1] for p in parts])
        self._files = [f for p in parts for f in p[:2]]
        self._token_paths = [p[0] for p in parts]
        self._fds = [(os.open(p[0], os.O_RDONLY), os.open(p[1], os.O_RDONLY)) for p in parts]

    def release(self) -> None:
        """Close the files and delete them."""
        if self._fds is not None:
            for pair in self._fds:
                for fd in pair:
                    os.close(fd)
            self._fds = None
        for f in (getattr(self, "_tokens", None), getattr(self, "_ids", None)):
            if f is not None:
                f.close()
        for p in self._files:
            p.unlink(missing_ok=True)

    def sample_id(self, i: int) -> str:
        assert self._fds is not None, "close() the store before reading"
        return os.pread(self._fds[self._part[i]][1], int(self._id_size[i]),
                        int(self._id_start[i])).decode()

    def read_into(self, i: int, ids: np.ndarray, labels: np.ndarray) -> None:
        """Read sample ``i``'s ids and labels into two int32 views of its exact length."""
        assert self._fds is not None, "close() the store before reading"
        n = int(self.lengths[i])
        if n == 0:
            return
        offset = 8 * int(self._token_start[i])
        got = os.preadv(self._fds[self._part[i]][0], [ids, labels], offset)
        if got != 8 * n:
            raise OSError(f"short read of sample {i} from {self._token_paths[self._part[i]]}")

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i``'s (input_ids, labels)."""
        n = int(self.lengths[i])
        ids, labels = np.empty(n, np.int32), np.empty(n, np.int32)
        self.read_into(i, ids, labels)
        return ids, labels


def _numeric(values: np.ndarray) -> pa.Array:
    """A 1-D numeric numpy array as an Arrow array, from its buffer. (``pa.array`` would do the
    same, but its first call in a process imports pandas to ask whether the input is a pandas
    object: 0.3 s of the stage's fixed cost.)"""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _strings(values: list[str]) -> pa.Array:
    """Python strings as an Arrow string array, from its buffers (see ``_numeric``)."""
    data = [v.encode() for v in values]
    ends = np.cumsum([len(d) for d in data], dtype=np.int64)
    if ends.size and ends[-1] >= 2**31:
        raise ValueError("more than 2 GiB of sample ids in one record batch")
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets),
                                       pa.py_buffer(b"".join(data)))


def _offsets(counts: Sequence[int] | np.ndarray, dtype) -> pa.Array:
    return _numeric(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(dtype))


def row_record_batch(store: SampleStore, rows: list[list[int]], batch_ids: list[int]) -> pa.RecordBatch:
    """Build one record batch of packed rows from the sample store.

    ``rows[r]`` lists the sample indices (into the store) of row ``r`` in order.
    """
    flat = np.fromiter((i for row in rows for i in row), dtype=np.int64)
    seq_lens = store.lengths[flat].astype(np.int32) if flat.size else np.zeros(0, np.int32)
    total = int(seq_lens.sum(dtype=np.int64))
    ids = np.empty(total, np.int32)
    labels = np.empty(total, np.int32)
    at = 0
    for i, n in zip(flat.tolist(), seq_lens.tolist()):
        store.read_into(i, ids[at:at + n], labels[at:at + n])
        at += n
    per_row = [len(row) for row in rows]
    row_tokens = [int(x) for x in np.add.reduceat(seq_lens, np.cumsum([0] + per_row[:-1]))] \
        if flat.size else [0] * len(rows)
    return pa.record_batch([
        pa.LargeListArray.from_arrays(_offsets(row_tokens, np.int64), _numeric(ids)),
        pa.LargeListArray.from_arrays(_offsets(row_tokens, np.int64), _numeric(labels)),
        pa.ListArray.from_arrays(_offsets(per_row, np.int32), _numeric(seq_lens)),
        pa.ListArray.from_arrays(_offsets(per_row, np.int32),
                                 _numeric(store.targets[flat].astype(np.int32))),
        pa.ListArray.from_arrays(_offsets(per_row, np.int32),
                                 _strings([store.sample_id(i) for i in flat.tolist()])),
        _numeric(np.asarray(batch_ids, dtype=np.int64)),
    ], schema=PACKED.schema)


class RowFile:
    """One ``rows-NNNNN.arrow`` file being written: micro-batches are added in order and cut into
    record batches of at most ``rows_per_record_batch`` rows or ``tokens_per_record_batch`` tokens.
    A file's bytes depend only on its own micro-batches and their batch indices, so files written
    by different processes (``longalign.packing.spool``) equal those of one ``write_rows``."""

    def __init__(self, path: Path, store: SampleStore, *, rows_per_record_batch: int | None = None,
                 tokens_per_record_batch: int | None = None) -> None:
        self.store = store
        self.rows_limit = rows_per_record_batch or ROWS_PER_RECORD_BATCH
        self.tokens_limit = tokens_per_record_batch or TOKENS_PER_RECORD_BATCH
        self.writer = pa.ipc.new_file(str(path), PACKED.schema)
        self.rows = self.tokens = 0
        self._pending: list[list[int]] = []
        self._pending_ids: list[int] = []
        self._pending_tokens = 0

    def add(self, index: int, batch: list[list[int]]) -> None:
        """Add micro-batch ``batch`` (rows of sample indices) under batch index ``index``."""
        lengths = self.store.lengths
        for row in batch:
            tokens = int(lengths[row].sum())
            if self._pending and (len(self._pending) >= self.rows_limit
                                  or self._pending_tokens + tokens > self.tokens_limit):
                self._flush()
            self._pending.append(row)
            self._pending_ids.append(index)
            self._pending_tokens += tokens
            self.tokens += tokens
            self.rows += 1

    def _flush(self) -> None:
        if self._pending:
            self.writer.write_batch(row_record_batch(self.store, self._pending, self._pending_ids))
        self._pending, self._pending_ids, self._pending_tokens = [], [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def batch_tokens(lengths: np.ndarray, batch: list[list[int]]) -> int:
    return sum(int(lengths[row].sum()) for row in batch)


def cut_files(lengths: np.ndarray, batches: Sequence[list[list[int]]],
              tokens_per_file: int | None = None) -> list[tuple[int, int, int]]:
    """The micro-batch range ``[start, stop)`` and the tokens of every row file ``write_rows``
    writes: a new file starts at a micro-batch boundary once a file holds ``tokens_per_file``
    tokens."""
    tokens_per_file = tokens_per_file or TOKENS_PER_FILE
    files: list[list[int]] = []  # [start, stop, tokens]
    for k, batch in enumerate(batches):
        if not files or files[-1][2] >= tokens_per_file:
            files.append([k, k, 0])
        files[-1][1] = k + 1
        files[-1][2] += batch_tokens(lengths, batch)
    return [(a, b, t) for a, b, t in files]


def write_rows(out_dir: Path, store: SampleStore, batches: Iterable[list[list[int]]], *,
               rows_per_record_batch: int | None = None,
               tokens_per_record_batch: int | None = None,
               tokens_per_file: int | None = None) -> list[str]:
    """Write micro-batches (each a list of rows of sample indices) as ``rows-NNNNN.arrow`` files
    (cut as ``cut_files`` does); return the file names. Micro-batch ``k`` of the iteration gets
    batch index ``k``. The limits default to the module's ``ROWS_PER_RECORD_BATCH``,
    ``TOKENS_PER_RECORD_BATCH`` and ``TOKENS_PER_FILE``."""
    tokens_per_file = tokens_per_file or TOKENS_PER_FILE
    names: list[str] = []
    current: RowFile | None = None
    for k, batch in enumerate(batches):
        if current is None or current.tokens >= tokens_per_file:
            if current is not None:
                current.close()
            names.append(PACKED.shard_name(len(names)))
            current = RowFile(Path(out_dir) / names[-1], store,
                              rows_per_record_batch=rows_per_record_batch,
                              tokens_per_record_batch=tokens_per_record_batch)
        current.add(k, batch)
    if current is not None:
        current.close()
    return names
