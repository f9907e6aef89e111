"""Streaming Parquet output: ``documents-00000.parquet``, ``documents-00001.parquet``, ...

Rows are buffered only up to one row group (``group_rows`` rows or ``group_bytes`` of text), which
is then appended to the open shard; a shard is closed when it holds ``max_rows`` rows or
``max_bytes`` of text, and the next row opens a new one. Memory therefore stays bounded by one
row group however large the corpus and the shards are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("uri", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int64()),
        ("content_hash", pa.string()),
        ("language", pa.string()),
        ("metadata", pa.string()),
    ]
)


class ShardWriter:
    """Writes rows of ``SCHEMA`` into size-capped Parquet shards (zstd), one row group at a time."""

    def __init__(
        self, directory: Path, prefix: str = "documents", max_rows: int = 1000,
        max_bytes: int = 128 * 1024 * 1024, group_rows: int = 64, group_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.group_rows, self.group_bytes = group_rows, group_bytes
        self.rows: list[dict[str, Any]] = []  # the pending row group
        self.bytes = 0  # text bytes of the pending row group
        self.shards: list[str] = []
        self._writer: Optional[pq.ParquetWriter] = None
        self._shard_rows = 0  # rows in the open shard, pending ones included
        self._shard_bytes = 0

    def add(self, row: dict[str, Any]) -> None:
        size = len(row["text"].encode("utf-8"))
        if self._shard_rows and self._shard_bytes + size > self.max_bytes:
            self.close_shard()
        self.rows.append(row)
        self.bytes += size
        self._shard_rows += 1
        self._shard_bytes += size
        if self._shard_rows >= self.max_rows:
            self.close_shard()
        elif len(self.rows) >= self.group_rows or self.bytes >= self.group_bytes:
            self._write_group()

    def _write_group(self) -> None:
        if not self.rows:
            return
        if self._writer is None:
            name = f"{self.prefix}-{len(self.shards):05d}.parquet"
            self._writer = pq.ParquetWriter(str(self.directory / name), SCHEMA, compression="zstd")
            self.shards.append(name)
        self._writer.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA))
        self.rows, self.bytes = [], 0

    def close_shard(self) -> None:
        self._write_group()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._shard_rows = self._shard_bytes = 0

    def flush(self) -> None:
        """Write what is pending and close the open shard (call once at the end)."""
        self.close_shard()
