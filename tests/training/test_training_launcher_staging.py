"""The launcher stages packed data on the shared volume for the job: the rows of a sharded run
that are on that volume already are pointed at, not copied; rows anywhere else are copied in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import CHATS, ShardWriter
from longalign.packing import pack
from longalign.training.data import PackedData
from longalign.training.launcher.run import _stage

MOUNT = "/mnt/longalign"  # where the job's pods mount the volume


def packed_with_rows_in(tmp_path: Path, model: str, rows_dir: Path) -> Path:
    """A packing output whose row files were moved to ``rows_dir`` (as a sharded run leaves it)."""
    chats = tmp_path / "chats"
    chats.mkdir()
    writer = ShardWriter(CHATS, chats)
    for i in range(12):
        writer.add({"id": f"c{i}", "messages": [
            {"role": "user", "content": "word " * (5 + 7 * i)},
            {"role": "assistant", "content": f"answer {i}"}]})
    writer.flush()
    packed = tmp_path / "packed"
    pack(PackingConfig(max_len=128, tokens_per_file=200), model, chats, packed)
    meta = json.loads((packed / "meta.json").read_text())
    assert len(meta["files"]) >= 2
    rows_dir.mkdir(parents=True)
    for name in meta["files"]:
        shutil.move(packed / name, rows_dir / name)
    meta["rows_dir"] = str(rows_dir)
    (packed / "meta.json").write_text(json.dumps(meta))
    return packed


def test_rows_on_the_volume_are_pointed_at(tmp_path, tiny_model):
    volume = tmp_path / "volume"
    packed = packed_with_rows_in(tmp_path, tiny_model, volume / "sharded" / "rows" / "abc")
    dest = volume / "runs" / "job" / "packed"
    _stage(packed, dest, volume, MOUNT)
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["rows_dir"] == f"{MOUNT}/sharded/rows/abc"  # where the job's pods see them
    assert not list(dest.glob("rows-*.arrow"))  # nothing copied


def test_rows_elsewhere_are_copied_and_the_copy_reads_the_same(tmp_path, tiny_model):
    volume = tmp_path / "volume"
    volume.mkdir()
    packed = packed_with_rows_in(tmp_path, tiny_model, tmp_path / "other-claim" / "rows")
    dest = volume / "runs" / "job" / "packed"
    _stage(packed, dest, volume, MOUNT)
    meta = json.loads((dest / "meta.json").read_text())
    assert "rows_dir" not in meta and sorted(p.name for p in dest.glob("rows-*")) == meta["files"]
    a, b = PackedData(packed), PackedData(dest)
    assert [m.seq_lens for m in a.batches] == [m.seq_lens for m in b.batches]


def test_missing_rows_fail_before_anything_is_staged(tmp_path, tiny_model):
    volume = tmp_path / "volume"
    packed = packed_with_rows_in(tmp_path, tiny_model, volume / "rows")
    (volume / "rows" / "rows-00001.arrow").unlink()
    with pytest.raises(UserError, match="missing rows-00001.arrow"):
        _stage(packed, volume / "runs" / "job" / "packed", volume, MOUNT)
    assert not (volume / "runs" / "job" / "packed").exists()
