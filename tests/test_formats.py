"""The inter-stage formats: shard naming, version checks and the one writer and reader."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.errors import UserError
from longalign.formats import (CHATS, CORPUS, PACKED, Shards, ShardWriter, read_packed,
                               write_packed_meta, write_rows)


@pytest.mark.parametrize("fmt", [CORPUS, CHATS, PACKED], ids=lambda f: f.prefix)
def test_rows_round_trip_with_name_and_version_in_every_shard(tmp_path, fmt):
    row = {name: None for name, _ in fmt.fields}
    row.update({c: [1] if "list" in str(dict(fmt.fields)[c]) else "x" for c in fmt.required})
    if fmt is PACKED:
        row.update(batch=0, sample_ids=["s"])
    if fmt is CHATS:
        row["messages"] = [{"role": "user", "content": "hi"}]
    writer = ShardWriter(fmt, tmp_path, max_rows=2)
    for _ in range(5):
        writer.add(row)
    assert writer.flush() == [fmt.shard_name(i) for i in range(3)]
    assert [p.name for p in sorted(tmp_path.glob(fmt.pattern))] == writer.shards
    shards = Shards(fmt, tmp_path)
    assert shards.num_rows == 5
    assert shards.read_table().to_pylist() == [row] * 5
    for f in shards.files:
        schema = f.schema_arrow if fmt.suffix == "parquet" else f.schema
        assert schema.metadata[b"longalign.version"] == str(fmt.version).encode()


def test_another_version_is_one_clear_error(tmp_path):
    newer = dataclasses.replace(CORPUS, version=CORPUS.version + 1)
    write_rows(newer, tmp_path, [{"id": "a", "text": "t"}])
    with pytest.raises(UserError, match=r"corpus .*documents-00000.parquet is format version 2, "
                                        r"this longalign reads version 1: re-run the sourcing stage"):
        Shards(CORPUS, tmp_path)


def test_shards_of_another_format_are_refused(tmp_path):
    renamed = dataclasses.replace(CHATS, prefix=CORPUS.prefix)  # chats written under corpus names
    write_rows(renamed, tmp_path, [{"id": "a", "messages": []}])
    with pytest.raises(UserError, match="holds chats, not corpus"):
        Shards(CORPUS, tmp_path)


def test_shards_written_before_the_version_metadata_count_as_version_1(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["t"]}), tmp_path / "documents-00000.parquet")
    assert Shards(CORPUS, tmp_path).read_table().to_pylist() == [{"id": "a", "text": "t"}]


def test_missing_shards_and_columns_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Shards(CHATS, tmp_path / "nope")
    with pytest.raises(UserError, match="holds no samples-\\*.parquet files: is it the generation"):
        Shards(CHATS, tmp_path)
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "samples-00000.parquet")
    with pytest.raises(UserError, match="lacks column\\(s\\) messages"):
        Shards(CHATS, tmp_path)
    (tmp_path / "samples-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read chats"):
        Shards(CHATS, tmp_path)


def test_packed_meta_version_and_strategy_are_checked(tmp_path):
    write_rows(PACKED, tmp_path, [])
    meta = dict(strategy="pack", max_len=8, model="m", pad_token_id=0, rows=0, batches=0,
                samples=0, tokens=0)
    written = write_packed_meta(tmp_path, **meta)
    got, tables = read_packed(tmp_path)
    assert got == written and got["schema_version"] == PACKED.version and tables[0].num_rows == 0
    write_packed_meta(tmp_path, **dict(meta, strategy="zigzag"))
    with pytest.raises(UserError, match="unknown strategy 'zigzag'"):
        read_packed(tmp_path)
    write_packed_meta(tmp_path, **dict(meta, schema_version=0))
    with pytest.raises(UserError, match="meta.json is format version 0"):
        read_packed(tmp_path)
