"""Packing as a map over input parts in worker processes: the same rows as one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from longalign.config import PackingConfig
from longalign.formats import CHATS, CORPUS, ShardWriter, Shards
from longalign.packing import pack
from longalign.packing.encode import Encoded
from longalign.packing.parallel import split_rows
from longalign.packing.store import SampleStore

MAX_LEN = 256


def chat(i: int) -> dict:
    messages = [{"role": "system", "content": "Be brief."}] if i % 4 == 0 else []
    for t in range(1 + i % 3):
        words = 3 + (i * 29) % 120 if t == 0 else 2
        messages.append({"role": "user", "content": f"doc{i} " + "word " * words})
        messages.append({"role": "assistant", "content": f"Answer {i}.{t} is {i * 7 + t}."})
    return {"id": f"c{i:03d}", "messages": messages, "task": "qa" if i % 2 else "summary",
            "teacher": "synthetic", "doc_id": f"d{i}", "reference": None, "n_chars": 10}


def chats_input(directory: Path) -> Path:
    rows = [chat(i) for i in range(40)]
    rows[7] = {**rows[7], "messages": [{"role": "user", "content": "no answer"}]}  # no_assistant
    rows[11] = {**chat(11), "messages": chat(11)["messages"] * 30}  # too_long
    rows.append({**chat(99), "id": "c003"})  # a duplicate of a row in the first part
    rows.append({**chat(98), "id": "c030"})  # a duplicate of a row in a later part
    directory.mkdir(parents=True)
    writer = ShardWriter(CHATS, directory, group_rows=5)  # several row groups per shard
    for s in range(2):  # two shards: parts cross shard and row-group boundaries
        for row in rows[s * 21:(s + 1) * 21]:
            writer.add(row)
        writer.close_shard()
    writer.flush()
    return directory


def outputs(out: Path) -> dict[str, bytes]:
    """Every file of a packing output by name; meta.json without the workers setting."""
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    meta = json.loads(files.pop("meta.json"))
    assert meta["config"].pop("workers") in (1, 2, 3)
    files["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    files.pop("lengths.png")  # a plot of stats.json, compared there
    return files


def test_three_workers_write_the_rows_one_process_writes(tmp_path, tiny_model):
    source = chats_input(tmp_path / "chats")
    one = pack(PackingConfig(max_len=MAX_LEN, seed=3), tiny_model, source, tmp_path / "one")
    three = pack(PackingConfig(max_len=MAX_LEN, seed=3, workers=3), tiny_model, source,
                 tmp_path / "three")
    stats = one.stats
    assert stats["skipped"] == {"duplicate_id": 2, "no_assistant": 1, "too_long": 1}
    assert stats["rows"] > 1 and stats["data_tasks"] == {"qa": 21, "summary": 21}
    a, b = outputs(tmp_path / "one"), outputs(tmp_path / "three")
    assert sorted(a) == sorted(b) and any(name.endswith(".arrow") for name in a)
    for name in a:
        assert a[name] == b[name], name
    assert three.stats == stats
    assert not [p for p in (tmp_path / "three").iterdir() if p.name.startswith(".samples")]


def test_text_documents_in_two_workers_equal_one_process(tmp_path, tiny_model):
    source = tmp_path / "corpus"
    source.mkdir()
    writer = ShardWriter(CORPUS, source, group_rows=4)
    for i in range(15):
        writer.add({"id": f"t{i}", "text": ("Line %d of the text. " % i) * (5 + 40 * (i % 4)),
                    "source": "synthetic", "n_chars": 1, "n_tokens": 1})
    writer.flush()
    pack(PackingConfig(format="text", max_len=MAX_LEN), tiny_model, source, tmp_path / "one")
    pack(PackingConfig(format="text", max_len=MAX_LEN, workers=2), tiny_model, source,
         tmp_path / "two")
    a, b = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert a == b and json.loads(a["stats.json"])["samples_per_row"] != {"1": 15}


def test_iter_range_yields_exactly_the_rows_of_the_range(tmp_path):
    source = chats_input(tmp_path / "chats")
    files = Shards(CHATS, source)
    every = [r for b in files.iter_batches(7, ["id"]) for r in b.column("id").to_pylist()]
    assert len(every) == files.num_rows == 42
    for start, stop in [(0, 42), (0, 1), (3, 9), (20, 23), (41, 42), (5, 5)]:
        got = [r for b in files.iter_range(start, stop, 2, ["id"])
               for r in b.column("id").to_pylist()]
        assert got == every[start:stop]
        assert all(b.num_rows <= 2 for b in files.iter_range(start, stop, 2, ["id"]))


@pytest.mark.parametrize("total,parts", [(10, 3), (2, 2), (5, 1), (7, 7)])
def test_split_rows_covers_every_row_once_in_order(total, parts):
    ranges = split_rows(total, parts)
    assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_joined_parts_read_back_as_one_store(tmp_path):
    def enc(i: int, n: int) -> Encoded:
        ids = np.arange(i * 100, i * 100 + n, dtype=np.int32)
        return Encoded(f"id-{i}-" + "é" * i, ids, -ids)

    samples = [enc(i, n) for i, n in enumerate([3, 1, 5, 2, 4, 6])]
    counts = []
    for k, part in enumerate([samples[:2], [], samples[2:]]):  # an empty part too
        store = SampleStore(tmp_path, f".p{k}")
        store.append(part)
        counts.append(store.finish())
    joined = SampleStore.join([tmp_path / f".p{k}" for k in range(3)])
    assert counts == [2, 0, 4] and joined.count == 6
    assert joined.lengths.tolist() == [3, 1, 5, 2, 4, 6]
    for i, s in enumerate(samples):
        ids, labels = joined.sample(i)
        assert joined.sample_id(i) == s.id
        assert ids.tolist() == s.input_ids.tolist() and labels.tolist() == s.labels.tolist()
    joined.release()
    assert list(tmp_path.iterdir()) == []


def test_map_steps_and_the_reduce_as_separate_stages_equal_one_process(tmp_path, tiny_model):
    from longalign.errors import UserError
    from longalign.packing.parallel import encode_shard
    from longalign.packing.stage import pack_parts

    source = chats_input(tmp_path / "chats")
    config = PackingConfig(max_len=MAX_LEN, seed=3)
    pack(config, tiny_model, source, tmp_path / "one")
    parts = [tmp_path / f"part-{k}" for k in range(3)]
    summaries = [encode_shard(config, tiny_model, source, part, k, 3) for k, part in enumerate(parts)]
    assert [s["rows"] for s in summaries] == [[0, 14], [14, 28], [28, 42]]
    pack_parts(config, tiny_model, parts[::-1], tmp_path / "joined")  # the order they came in
    assert outputs(tmp_path / "one") == outputs(tmp_path / "joined")
    assert all((part / "part.bin").exists() for part in parts)  # inputs are left alone
    with pytest.raises(UserError, match="tally.json"):
        pack_parts(config, tiny_model, [tmp_path / "one"], tmp_path / "bad")
    with pytest.raises(UserError, match="without gaps"):
        pack_parts(config, tiny_model, [parts[0], parts[2]], tmp_path / "gap")
    with pytest.raises(UserError, match="index"):
        encode_shard(config, tiny_model, source, tmp_path / "p3", 3, 3)
