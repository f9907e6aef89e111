"""Streaming Parquet output: ``documents-00000.parquet``, ``documents-00001.parquet``, ..."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from longalign.io import write_parquet

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
    """Buffers rows and writes a shard when it holds ``max_rows`` rows or ``max_bytes`` of text."""

    def __init__(
        self, directory: Path, prefix: str = "documents", max_rows: int = 1000,
        max_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows: list[dict[str, Any]] = []
        self.bytes = 0
        self.shards: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        size = len(row["text"].encode("utf-8"))
        if self.rows and self.bytes + size > self.max_bytes:
            self.flush()
        self.rows.append(row)
        self.bytes += size
        if len(self.rows) >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        name = f"{self.prefix}-{len(self.shards):05d}.parquet"
        table = pa.Table.from_pylist(self.rows, schema=SCHEMA)
        write_parquet(self.directory / name, table)
        self.shards.append(name)
        self.rows, self.bytes = [], 0
