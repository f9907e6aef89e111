"""Packing over many pods with a shared volume (longalign.packing.spool): the map's stores and the
row files on the volume, one writer per row file; the output equals one process's byte for byte."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import open_packed
from longalign.packing import pack
from longalign.packing.parallel import encode_shard
from longalign.packing.spool import join_files, plan_parts, volume_dir, write_file
from longalign.training.data import PackedData

from test_packing_parallel import MAX_LEN, chats_input

CONFIGS = {
    "pack": {"max_len": MAX_LEN, "seed": 3, "tokens_per_file": 600},
    # several rows per micro-batch: a file ends only at a micro-batch boundary
    "sort": {"max_len": MAX_LEN, "seed": 1, "strategy": "sort", "batch_size": 3,
             "tokens_per_file": 500},
}


def sharded(config: PackingConfig, model: str, source: Path, root: Path, volume: Path,
            parts: int = 3, reverse: bool = True) -> tuple[Path, Path]:
    """The sharded packing steps as the pipeline runs them (each writer in a process of its
    own); returns (the packed output, the plan output)."""
    outs = [root / f"part-{k}" for k in range(parts)]
    for k, out in enumerate(outs):
        encode_shard(config, model, source, out, k, parts,
                     store_dir=volume_dir(volume, "parts", str(out)))
    plan_out = root / "plan"
    _, files = plan_parts(config, model, outs[::-1], plan_out,
                          volume_dir(volume, "rows", str(plan_out)))
    written = [root / f"written-{k}" for k in files]
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:  # separate processes, in any order
        order = files[::-1] if reverse else files
        pool.starmap(write_file, [(str(plan_out), k, str(written[k])) for k in order])
    join_files(plan_out, written, root / "packed")
    return root / "packed", plan_out


@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_parallel_row_files_equal_the_one_process_output(tmp_path, tiny_model, strategy):
    config = PackingConfig(**CONFIGS[strategy])
    source = chats_input(tmp_path / "chats")
    one = tmp_path / "one"
    pack(config, tiny_model, source, one)
    volume = tmp_path / "volume"
    packed, plan = sharded(config, tiny_model, source, tmp_path / "run", volume)

    meta_one, shards_one = open_packed(one)
    meta, shards = open_packed(packed)
    assert len(meta["files"]) >= 3, "the test needs several row files"
    rows_dir = Path(meta.pop("rows_dir"))
    assert rows_dir.parent.parent == volume and meta == meta_one
    assert [p.name for p in shards.paths] == meta_one["files"]
    for a, b in zip(shards_one.paths, shards.paths):
        assert a.read_bytes() == b.read_bytes(), b.name
    # everything but meta.json is the same file; nothing else is in the output
    assert sorted(p.name for p in one.iterdir() if not p.name.startswith("rows-")) == \
        sorted(p.name for p in packed.iterdir())
    for name in ("stats.json", "result.json", "summary.md"):
        assert (one / name).read_bytes() == (packed / name).read_bytes(), name
    # the stores are gone from the volume, the rows stay; the parts' own outputs are left alone
    assert list((volume / "parts").iterdir()) == [] and rows_dir.is_dir()
    assert all((tmp_path / "run" / f"part-{k}" / "tally.json").is_file() for k in range(3))
    # training reads the same micro-batches from either
    a, b = PackedData(one), PackedData(packed)
    assert [(m.index, m.seq_lens) for m in a.batches] == [(m.index, m.seq_lens) for m in b.batches]
    for ma, mb in zip(a.batches, b.batches):
        assert a.load(ma).input_ids.equal(b.load(mb).input_ids)


def test_join_refuses_missing_or_altered_row_files(tmp_path, tiny_model):
    config = PackingConfig(**CONFIGS["pack"])
    source = chats_input(tmp_path / "chats")
    volume = tmp_path / "volume"
    parts = [tmp_path / f"part-{k}" for k in range(2)]
    for k, out in enumerate(parts):
        encode_shard(config, tiny_model, source, out, k, 2,
                     store_dir=volume_dir(volume, "parts", str(out)))
    plan = tmp_path / "plan"
    _, files = plan_parts(config, tiny_model, parts, plan, volume / "rows")
    written = [tmp_path / f"w{k}" for k in files]
    for k in files[1:]:
        write_file(plan, k, written[k])
    with pytest.raises(UserError, match="rows-00000.arrow: no writer reported it"):
        join_files(plan, written[1:], tmp_path / "out")
    write_file(plan, 0, written[0])
    with pytest.raises(UserError, match="reported by two writers"):
        join_files(plan, written + written[:1], tmp_path / "out")
    last = volume / "rows" / f"rows-{files[-1]:05d}.arrow"
    last.write_bytes(last.read_bytes()[:-8])  # cut short after its writer finished
    with pytest.raises(UserError, match="not the size its writer reported"):
        join_files(plan, written, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert all(p.with_name("part.bin").is_file() for p in map(Path, json.loads(
        (plan / "plan.json").read_text())["volume_stores"])), "a failed join deletes nothing"
    write_file(plan, files[-1], written[-1], overwrite=True)  # a retry of that writer
    join_files(plan, written, tmp_path / "out")
    with pytest.raises(UserError, match=r"the plan has \d+"):
        write_file(plan, len(files), tmp_path / "w-extra")
    with pytest.raises(UserError, match="shared_dir is empty"):
        volume_dir("", "rows", "x")


def test_the_plan_refuses_stores_the_writer_pods_cannot_read(tmp_path, tiny_model):
    """A part run without shared_dir keeps its store in its own artifact: in pods, only the
    volume is shared, so the plan step says so instead of the writers failing one by one."""
    config = PackingConfig(**CONFIGS["pack"])
    source = chats_input(tmp_path / "chats")
    volume = tmp_path / "volume"
    encode_shard(config, tiny_model, source, tmp_path / "p0", 0, 2,
                 store_dir=volume_dir(volume, "parts", "p0"))
    encode_shard(config, tiny_model, source, tmp_path / "p1", 1, 2)  # no store_dir
    with pytest.raises(UserError, match="1 packing part.*run packing_part with shared_dir"):
        plan_parts(config, tiny_model, [tmp_path / "p0", tmp_path / "p1"], tmp_path / "plan",
                   volume / "rows", shared_dir=volume)
    assert not (tmp_path / "plan").exists()


def test_readers_refuse_rows_that_are_not_all_there(tmp_path, tiny_model):
    config = PackingConfig(**CONFIGS["pack"])
    source = chats_input(tmp_path / "chats")
    packed, _ = sharded(config, tiny_model, source, tmp_path / "run", tmp_path / "volume",
                        parts=2, reverse=False)
    rows_dir = Path(json.loads((packed / "meta.json").read_text())["rows_dir"])
    (rows_dir / "rows-00001.arrow").unlink()
    with pytest.raises(UserError, match="missing rows-00001.arrow"):
        PackedData(packed)
    for f in rows_dir.iterdir():
        f.unlink()
    rows_dir.rmdir()
    with pytest.raises(UserError, match="is the shared volume mounted"):
        open_packed(packed)
