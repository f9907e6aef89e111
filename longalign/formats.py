"""The data formats between stages: one definition each, one shard writer, one shard reader.

A stage output holds numbered shards ``<prefix>-00000.<suffix>``, ``<prefix>-00001.<suffix>``, ...

- corpus (sourcing -> generation, scoring): ``documents-*.parquet``, one long document a row;
- chats (generation -> packing): ``samples-*.parquet``, one chat a row;
- packed (packing -> training): ``rows-*.arrow``, uncompressed Arrow IPC files (memory-mapped by
  training without copying), one packed row a row, plus ``meta.json`` (which lists the row
  files, and names the directory holding them when that is not the output itself: ``rows_dir``,
  on the shared volume, written by the sharded pipelines).

Every shard carries its format's name and version in the Arrow schema metadata; the reader
refuses a shard of another version with one error line (shards without the metadata predate it
and are version 1). The packed ``meta.json`` repeats the version as ``schema_version``.
Labels that are not predicted are ``IGNORE`` (-100, what torch's cross-entropy skips).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq

from longalign.errors import UserError
from longalign.io import read_json, require_dir, write_json

IGNORE = -100  # label of a position that is not predicted
Strategy = Literal["pack", "sort", "naive"]  # how packed rows were laid out (packed meta.json)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
FORMAT_KEY = b"longalign.format"
VERSION_KEY = b"longalign.version"


@dataclass(frozen=True)
class Format:
    """One inter-stage format: its files, Arrow schema, version and the columns a reader needs."""

    name: str  # as in error messages: "corpus", "chats", "packed data"
    prefix: str  # shard file names: <prefix>-NNNNN.<suffix>
    suffix: Literal["parquet", "arrow"]
    fields: tuple[tuple[str, pa.DataType], ...]
    version: int
    required: tuple[str, ...]  # columns a reader cannot do without
    producer: str  # the stage that writes it (named in errors)

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema, with the format name and version as metadata."""
        return pa.schema(list(self.fields), metadata={
            FORMAT_KEY: self.name.encode(), VERSION_KEY: str(self.version).encode()})

    @property
    def pattern(self) -> str:
        return f"{self.prefix}-*.{self.suffix}"

    def shard_name(self, index: int) -> str:
        return f"{self.prefix}-{index:05d}.{self.suffix}"

    def check_version(self, found: Any, where: str | os.PathLike) -> None:
        """The one check of a stored version against this code's (a UserError when they differ)."""
        if found != self.version:
            raise UserError(f"{self.name} {where} is format version {found!r}, this longalign reads "
                            f"version {self.version}: re-run the {self.producer} stage with this version")


CORPUS = Format(
    name="corpus", prefix="documents", suffix="parquet", version=1, producer="sourcing",
    fields=(
        ("id", pa.string()),
        ("source", pa.string()),
        ("uri", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int64()),
        ("content_hash", pa.string()),
        ("language", pa.string()),
        ("metadata", pa.string()),  # a JSON object
    ),
    required=("id", "text"),
)

CHATS = Format(
    name="chats", prefix="samples", suffix="parquet", version=1, producer="generation",
    fields=(
        ("id", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("task", pa.string()),
        ("teacher", pa.string()),
        ("doc_id", pa.string()),
        ("reference", pa.string()),  # exact answer of a synthetic task (else null)
        ("n_chars", pa.int64()),
        ("teacher_prompt_tokens", pa.int64()),
        ("teacher_completion_tokens", pa.int64()),
    ),
    required=("id", "messages"),
)

# Token columns are large_list (64-bit offsets), so no column chunk overflows 2^31 elements.
PACKED = Format(
    name="packed data", prefix="rows", suffix="arrow", version=1, producer="packing",
    fields=(
        ("input_ids", pa.large_list(pa.int32())),
        ("labels", pa.large_list(pa.int32())),  # IGNORE where nothing is predicted
        ("seq_lens", pa.list_(pa.int32())),  # the lengths of the row's samples, in order
        ("n_targets", pa.list_(pa.int32())),  # predicted tokens per sample
        ("sample_ids", pa.list_(pa.string())),
        ("batch", pa.int64()),  # micro-batch index; a micro-batch's rows are consecutive
    ),
    required=("input_ids", "labels", "seq_lens", "n_targets", "sample_ids", "batch"),
)
PACKED_META = "meta.json"


class ShardWriter:
    """Writes rows of one format into numbered, size-capped shards.

    ``add`` buffers rows up to one row group (``group_rows`` rows or ``group_bytes`` as measured
    by ``size``), then appends the group to the open shard; a shard is closed once it holds
    ``max_rows`` rows or ``max_bytes``, and the next row opens a new one. ``write_batch`` appends
    a ready record batch (the caller decides shard boundaries with ``close_shard``). Memory stays
    bounded by one row group. Parquet shards are zstd-compressed; Arrow shards are uncompressed.
    """

    def __init__(self, fmt: Format, directory: str | os.PathLike, *, max_rows: int | None = None,
                 max_bytes: int | None = None, group_rows: int = 64, group_bytes: int = 16 << 20,
                 size: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.format = fmt
        self.directory = Path(directory)
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.group_rows, self.group_bytes = group_rows, group_bytes
        self.size = size or (lambda row: 0)
        self.shards: list[str] = []
        self._schema = fmt.schema
        self._rows: list[dict[str, Any]] = []  # the pending row group
        self._group_bytes = 0
        self._writer: Any = None
        self._shard_rows = 0  # rows in the open shard, pending ones included
        self._shard_bytes = 0

    def add(self, row: dict[str, Any]) -> None:
        size = self.size(row)
        if self._shard_rows and self.max_bytes and self._shard_bytes + size > self.max_bytes:
            self.close_shard()
        self._rows.append(row)
        self._group_bytes += size
        self._shard_rows += 1
        self._shard_bytes += size
        if self.max_rows and self._shard_rows >= self.max_rows:
            self.close_shard()
        elif len(self._rows) >= self.group_rows or self._group_bytes >= self.group_bytes:
            self._write_group()

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._write_group()
        self._open().write_batch(batch)
        self._shard_rows += batch.num_rows

    def _open(self) -> Any:
        if self._writer is None:
            name = self.format.shard_name(len(self.shards))
            path = str(self.directory / name)
            if self.format.suffix == "parquet":
                self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
            else:
                self._writer = pa.ipc.new_file(path, self._schema)
            self.shards.append(name)
        return self._writer

    def _write_group(self) -> None:
        if self._rows:
            self._open().write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows, self._group_bytes = [], 0

    def close_shard(self) -> None:
        """Write what is pending and close the open shard; the next row starts a new one."""
        self._write_group()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._shard_rows = self._shard_bytes = 0

    def flush(self) -> list[str]:
        """Write what is pending and close the open shard (call once at the end); returns the names."""
        self.close_shard()
        return self.shards


def write_rows(fmt: Format, directory: str | os.PathLike, rows: list[dict[str, Any]]) -> list[str]:
    """Write ``rows`` as one shard of ``fmt`` (small outputs, tests); returns the file names."""
    writer = ShardWriter(fmt, directory)
    for row in rows:
        writer.add(row)
    if not rows:
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=fmt.schema))
    return writer.flush()


class Shards:
    """The shards of one format in a stage output, opened and checked: present, readable, of this
    code's version and holding the required columns. Parquet shards are opened as
    ``pq.ParquetFile``; Arrow shards are memory-mapped (nothing is read until a column is)."""

    def __init__(self, fmt: Format, directory: str | os.PathLike) -> None:
        self.format = fmt
        self.directory = require_dir(directory, fmt.name)
        self.paths = sorted(self.directory.glob(fmt.pattern))
        if not self.paths:
            raise UserError(f"{fmt.name} {self.directory} holds no {fmt.pattern} files: is it the "
                            f"{fmt.producer} stage's output?")
        self.files = [self._open(p) for p in self.paths]

    def _open(self, path: Path) -> Any:
        fmt = self.format
        try:
            if fmt.suffix == "parquet":
                opened = pq.ParquetFile(path)
                schema = opened.schema_arrow
            else:
                opened = pa.ipc.open_file(pa.memory_map(str(path), "r"))
                schema = opened.schema
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read {fmt.name} {path}: {exc}") from None
        metadata = schema.metadata or {}
        if FORMAT_KEY in metadata and metadata[FORMAT_KEY] != fmt.name.encode():
            raise UserError(f"{path} holds {metadata[FORMAT_KEY].decode()}, not {fmt.name}")
        version = metadata.get(VERSION_KEY, b"1").decode()
        fmt.check_version(int(version) if version.isdigit() else version, path)
        missing = [c for c in fmt.required if c not in schema.names]
        if missing:
            raise UserError(f"{fmt.name} {path} lacks column(s) {', '.join(missing)}: is it the "
                            f"{fmt.producer} stage's output?")
        return opened

    @property
    def columns(self) -> list[str]:
        """Column names present in every shard."""
        names = [f.schema_arrow.names if self.format.suffix == "parquet" else f.schema.names
                 for f in self.files]
        return [c for c in names[0] if all(c in n for n in names[1:])]

    @property
    def num_rows(self) -> int:
        return sum(f.metadata.num_rows if self.format.suffix == "parquet" else
                   sum(f.get_batch(i).num_rows for i in range(f.num_record_batches))
                   for f in self.files)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """All shards as one table (Arrow shards: zero-copy from the memory maps)."""
        try:
            if self.format.suffix == "parquet":
                tables = [f.read(columns=columns) for f in self.files]
            else:
                tables = [f.read_all().select(columns) if columns else f.read_all() for f in self.files]
            return pa.concat_tables(tables)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read {self.format.name} {self.directory}: {exc}") from None

    def iter_batches(self, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows (Parquet) or as stored (Arrow), in order."""
        for f in self.files:
            if self.format.suffix == "parquet":
                yield from f.iter_batches(batch_size=batch_size, columns=columns)
            else:
                for i in range(f.num_record_batches):
                    batch = f.get_batch(i)
                    yield batch.select(columns) if columns else batch

    def iter_range(self, start: int, stop: int, batch_size: int,
                   columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows holding exactly rows ``start`` to
        ``stop - 1`` of the shards in order (the rows ``iter_batches`` yields, counted from 0);
        only the row groups (Parquet) or record batches (Arrow) overlapping the range are read."""
        at = 0  # global index of the first row of the current group
        for f in self.files:
            parquet = self.format.suffix == "parquet"
            groups = f.metadata.num_row_groups if parquet else f.num_record_batches
            for g in range(groups):
                n = f.metadata.row_group(g).num_rows if parquet else f.get_batch(g).num_rows
                lo, hi = max(start, at), min(stop, at + n)
                if lo < hi:
                    table = (f.read_row_group(g, columns=columns) if parquet
                             else pa.Table.from_batches([f.get_batch(g)]).select(columns or f.schema.names))
                    yield from table.slice(lo - at, hi - lo).to_batches(max_chunksize=batch_size)
                at += n
                if at >= stop:
                    return


def write_packed_meta(directory: str | os.PathLike, *, strategy: str, max_len: int, model: str,
                      pad_token_id: int, rows: int, batches: int, samples: int, tokens: int,
                      **extra: Any) -> dict[str, Any]:
    """Write the packed ``meta.json`` (what training needs besides the rows); returns it."""
    meta = {"schema_version": PACKED.version, "strategy": strategy, "max_len": max_len,
            "model": model, "pad_token_id": pad_token_id, "rows": rows, "batches": batches,
            "samples": samples, "tokens": tokens, **extra}
    write_json(Path(directory) / PACKED_META, meta)
    return meta


def read_packed_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The packed ``meta.json``, its version and strategy checked."""
    path = Path(directory) / PACKED_META
    meta = read_json(path)
    PACKED.check_version(meta.get("schema_version"), path)
    if meta.get("strategy") not in STRATEGIES:
        raise UserError(f"{PACKED.name} {path}: unknown strategy {meta.get('strategy')!r}")
    return meta


def open_packed(directory: str | os.PathLike) -> tuple[dict[str, Any], Shards]:
    """A packing output's checked ``meta.json`` and its row files, opened. The rows are in the
    directory itself, or, when ``meta.json`` has ``rows_dir`` (the sharded pipelines write them on
    the shared volume), there. When ``meta.json`` lists its ``files``, exactly those must be
    present: a half-written set of rows is an error, not a smaller dataset."""
    meta = read_packed_meta(require_dir(directory, PACKED.name))
    rows_dir = meta.get("rows_dir") or directory
    if meta.get("rows_dir") and not Path(rows_dir).is_dir():
        raise UserError(f"{PACKED.name} {directory}: its rows are in {rows_dir}, which does not "
                        "exist here (is the shared volume mounted, or were the rows deleted?)")
    shards = Shards(PACKED, rows_dir)
    listed = meta.get("files")
    found = [p.name for p in shards.paths]
    if listed is not None and found != list(listed):
        missing = sorted(set(listed) - set(found))
        extra = sorted(set(found) - set(listed))
        raise UserError(f"{PACKED.name} {directory}: meta.json lists {len(listed)} row files, "
                        f"{rows_dir} holds {len(found)}"
                        + (f"; missing {', '.join(missing[:5])}" if missing else "")
                        + (f"; not listed {', '.join(extra[:5])}" if extra else ""))
    return meta, shards


def read_packed(directory: str | os.PathLike) -> tuple[dict[str, Any], list[pa.Table]]:
    """A packing output: its checked ``meta.json`` and one memory-mapped table per row file."""
    meta, shards = open_packed(directory)
    return meta, [f.read_all() for f in shards.files]
