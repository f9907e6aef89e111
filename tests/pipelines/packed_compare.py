"""Comparing a sharded run's packing output (rows on the shared volume) with one process's."""

from __future__ import annotations

import json
from pathlib import Path

from longalign.formats import open_packed


def same_packed(one: Path, sharded: Path, volume: Path) -> int:
    """``sharded`` holds the rows of ``one`` byte for byte, in ``rows_dir`` below ``volume``, and
    the same meta.json but for ``rows_dir``; the other files are equal and the sample stores are
    gone from the volume. Returns the number of row files."""
    meta_one, shards_one = open_packed(one)
    meta, shards = open_packed(sharded)
    rows_dir = Path(meta.pop("rows_dir"))
    assert rows_dir.is_relative_to(volume) and meta == meta_one
    assert [p.name for p in shards.paths] == meta_one["files"]
    for a, b in zip(shards_one.paths, shards.paths):
        assert a.read_bytes() == b.read_bytes(), b.name
    names = sorted(p.name for p in one.iterdir()
                   if not p.name.startswith("rows-") and p.name not in ("lengths.png", "meta.json"))
    assert names == sorted(p.name for p in sharded.iterdir()
                           if p.name not in ("lengths.png", "meta.json"))
    for name in names:
        assert (one / name).read_bytes() == (sharded / name).read_bytes(), name
    assert not [p for p in (volume / "parts").rglob("*") if p.is_file()], "stores left behind"
    assert json.loads((sharded / "stats.json").read_text())["files"] == meta_one["files"]
    return len(meta_one["files"])
