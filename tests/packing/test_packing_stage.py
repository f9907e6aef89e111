"""The packing stage end to end: Arrow layout, row contents, strategies, stats and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.results import StageResult
from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.models import load_tokenizer
from longalign.formats import CHATS, IGNORE, PACKED, ShardWriter, read_packed
from longalign.packing import pack
from longalign.packing.encode import ChatEncoder
from longalign.packing.store import SampleStore, _numeric, _strings, write_rows

def sample(i: int, words: int, turns: int = 1) -> dict:
    messages = [{"role": "system", "content": "Be brief."}] if i % 3 == 0 else []
    for t in range(turns):
        messages.append({"role": "user", "content": f"doc{i} " + "word " * (words if t == 0 else 3)})
        messages.append({"role": "assistant", "content": f"Answer {i}.{t} is {i * 7 + t}."})
    return {"id": f"s{i:03d}", "messages": messages, "task": "general", "teacher": "synthetic",
            "doc_id": f"d{i}", "reference": None if i % 2 else "ref", "n_chars": words * 5}


def write_chats(directory: Path, samples: list[dict], shards: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(CHATS, directory)
    for s in range(shards):
        for row in samples[s::shards]:
            writer.add(row)
        writer.close_shard()
    writer.flush()
    return directory


GOOD = [sample(i, words=5 + (i * 37) % 180, turns=1 + i % 3) for i in range(45)]
BAD = [
    {**sample(100, 5), "id": "no-assistant", "messages": [{"role": "user", "content": "hi"}]},
    {**sample(101, 5), "id": "empty", "messages": [{"role": "user", "content": " "},
                                                    {"role": "assistant", "content": "x"}]},
    {**sample(102, 5), "id": "role", "messages": [{"role": "tool", "content": "t"},
                                                  {"role": "assistant", "content": "x"}]},
    {**sample(103, 900), "id": "too-long"},
    {**sample(104, 5), "id": "s001"},  # duplicate id
]
MAX_LEN = 512


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    return write_chats(tmp_path_factory.mktemp("chats") / "chats", GOOD + BAD)


@pytest.fixture(scope="module")
def expected(tokenizer) -> dict:
    """Each good sample encoded on its own: id -> (input_ids, labels)."""
    encoder = ChatEncoder(tokenizer, MAX_LEN)
    out = encoder.encode_batch([s["id"] for s in GOOD], [s["messages"] for s in GOOD])
    return {e.id: (e.input_ids.tolist(), e.labels.tolist()) for e in out}


def run(chats: Path, out: Path, **cfg) -> dict:
    cfg.setdefault("max_len", MAX_LEN)
    return pack(PackingConfig(**cfg), "embedded:tiny", chats, out)


def rows_of(out: Path) -> list[dict]:
    return [r for t in read_packed(out)[1] for r in t.to_pylist()]


@pytest.fixture(scope="module")
def packed(chats, tmp_path_factory, tiny_model) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("packed") / "out"
    return out, run(chats, out)


def test_files_schema_and_memory_map(packed):
    out, stats = packed
    assert sorted(p.name for p in out.iterdir()) == [
        "lengths.png", "meta.json", "result.json", "rows-00000.arrow", "stats.json", "summary.md"]
    with pa.memory_map(str(out / "rows-00000.arrow"), "r") as source:
        reader = pa.ipc.open_file(source)
        assert reader.schema.equals(PACKED.schema)
        assert reader.schema.field("input_ids").type == pa.large_list(pa.int32())
        assert reader.schema.field("seq_lens").type == pa.list_(pa.int32())
        assert reader.schema.field("batch").type == pa.int64()
        assert reader.read_all().num_rows == stats["rows"]
    meta = json.loads((out / "meta.json").read_text())
    assert {k: meta[k] for k in ("schema_version", "strategy", "max_len", "model", "pad_token_id")} == {
        "schema_version": 1, "strategy": "pack", "max_len": MAX_LEN, "model": "embedded:tiny",
        "pad_token_id": 2}
    assert (meta["rows"], meta["batches"], meta["samples"], meta["tokens"]) == (
        stats["rows"], stats["batches"], stats["samples_packed"], stats["tokens"])
    assert json.loads((out / "stats.json").read_text()) == stats
    assert StageResult.load(out).headline == {"rows": stats["rows"], "efficiency": stats["efficiency"]}
    assert "| efficiency |" in (out / "summary.md").read_text()
    assert (out / "lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_read_packed_maps_without_copying(packed):
    out, _ = packed
    before = pa.total_allocated_bytes()
    meta, tables = read_packed(out)
    assert pa.total_allocated_bytes() - before < 4096  # buffers point into the memory map
    assert meta["rows"] == sum(t.num_rows for t in tables)


def test_rows_hold_the_samples_exactly(packed, expected, tokenizer):
    out, stats = packed
    rows = rows_of(out)
    seen = []
    for k, row in enumerate(rows):
        assert row["batch"] == k  # pack: one row per micro-batch, in order
        assert sum(row["seq_lens"]) == len(row["input_ids"]) == len(row["labels"]) <= MAX_LEN
        assert len(row["seq_lens"]) == len(row["n_targets"]) == len(row["sample_ids"])
        start = 0
        for sid, n, nt in zip(row["sample_ids"], row["seq_lens"], row["n_targets"]):
            ids, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
            assert (ids, labels) == expected[sid]
            assert labels[0] == IGNORE  # nothing is predicted across a boundary
            assert nt == sum(lab != IGNORE for lab in labels) > 0
            start += n
        concat = [t for sid in row["sample_ids"] for t in expected[sid][0]]
        assert tokenizer.decode(row["input_ids"]) == tokenizer.decode(concat)
        seen += row["sample_ids"]
    assert sorted(seen) == sorted(expected)
    assert stats["samples_packed"] == len(expected) == len(seen)


def test_targets_are_exactly_the_assistant_turns(packed, tokenizer):
    out, _ = packed
    answers = {s["id"]: [m["content"] + "<|im_end|>" for m in s["messages"] if m["role"] == "assistant"]
               for s in GOOD}
    for row in rows_of(out):
        start = 0
        for sid, n in zip(row["sample_ids"], row["seq_lens"]):
            runs, cur = [], []
            for tok, lab in zip(row["input_ids"][start:start + n], row["labels"][start:start + n]):
                if lab != IGNORE:
                    assert lab == tok
                    cur.append(tok)
                elif cur:
                    runs.append(tokenizer.decode(cur))
                    cur = []
            assert not cur  # the sample ends with an untrained newline after <|im_end|>
            assert runs == answers[sid]
            start += n


def test_stats_count_every_bad_case(packed):
    _, stats = packed
    assert stats["samples_in"] == len(GOOD) + len(BAD)
    assert stats["skipped"] == {"bad_role": 1, "duplicate_id": 1, "empty_message": 1,
                                "no_assistant": 1, "too_long": 1}
    assert stats["skipped_total"] + stats["samples_packed"] == stats["samples_in"]
    assert {e["id"] for e in stats["skipped_examples"]} >= {"no-assistant", "empty", "role", "too-long"}
    assert stats["rows"] >= stats["lower_bound_rows"] == -(-stats["tokens"] // MAX_LEN)
    assert stats["efficiency"] == pytest.approx(stats["tokens"] / (stats["rows"] * MAX_LEN), abs=1e-6)
    assert sum(stats["length_histogram"]["counts"]) == stats["samples_packed"]
    assert sum(int(k) * v for k, v in stats["samples_per_row"].items()) == stats["samples_packed"]
    metrics = stats["metrics"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["efficiency"] == stats["efficiency"] and metrics["skipped"] == 5
    assert stats["dropped_too_long"] == metrics["dropped_too_long"] == 1


def batches_of(rows: list[dict]) -> list[list[dict]]:
    groups: list[list[dict]] = []
    for row in rows:
        if not groups or groups[-1][0]["batch"] != row["batch"]:
            groups.append([])
        groups[-1].append(row)
    return groups


def test_sort_strategy(chats, tmp_path, expected):
    stats = run(chats, tmp_path / "out", strategy="sort", batch_size=4, seed=3)
    rows = rows_of(tmp_path / "out")
    assert all(len(r["seq_lens"]) == 1 for r in rows)
    groups = batches_of(rows)
    assert [g[0]["batch"] for g in groups] == list(range(len(groups)))
    lengths = [[r["seq_lens"][0] for r in g] for g in groups]
    assert all(ls == sorted(ls) for ls in lengths)
    ordered = sorted(lengths, key=lambda ls: ls[0])
    assert [x for ls in ordered for x in ls] == sorted(len(v[0]) for v in expected.values())
    assert sorted(map(len, lengths)) == [1] + [4] * 11
    assert lengths != ordered  # the group order is shuffled
    padded = sum(len(ls) * max(ls) for ls in lengths)
    assert stats["efficiency"] == pytest.approx(stats["tokens"] / padded, abs=1e-6)
    assert stats["batches"] == 12 and stats["rows"] == len(expected)


def test_naive_strategy(chats, tmp_path, expected):
    run(chats, tmp_path / "a", strategy="naive", batch_size=5, seed=1)
    run(chats, tmp_path / "b", strategy="naive", batch_size=5, seed=2)
    a, b = rows_of(tmp_path / "a"), rows_of(tmp_path / "b")
    assert [len(g) for g in batches_of(a)] == [5] * 9
    order = [r["sample_ids"][0] for r in a]
    assert sorted(order) == sorted(expected)
    assert order != [r["sample_ids"][0] for r in b]
    assert [r["batch"] for r in a] == [k // 5 for k in range(45)]


def test_same_seed_same_output(chats, tmp_path, packed):
    run(chats, tmp_path / "again")
    assert rows_of(tmp_path / "again") == rows_of(packed[0])
    run(chats, tmp_path / "other", seed=7)
    assert rows_of(tmp_path / "other") != rows_of(packed[0])


def test_middle_truncation_in_the_stage(chats, tmp_path):
    stats = run(chats, tmp_path / "out", truncation="middle", label_turns="last")
    assert stats["truncated"] == 1 and "too_long" not in stats["skipped"]
    row = next(r for r in rows_of(tmp_path / "out") if "too-long" in r["sample_ids"])
    k = row["sample_ids"].index("too-long")
    assert row["seq_lens"][k] == MAX_LEN and row["n_targets"][k] > 0


def test_shards_and_record_batches(tokenizer, tmp_path):
    encoder = ChatEncoder(tokenizer, MAX_LEN)
    encoded = encoder.encode_batch([s["id"] for s in GOOD], [s["messages"] for s in GOOD])
    store = SampleStore(tmp_path)
    store.append(encoded[:20])
    store.append(encoded[20:])
    store.close()
    assert store.lengths.tolist() == [len(e.input_ids) for e in encoded]
    assert store.targets.tolist() == [e.n_targets for e in encoded]
    for i in (0, 7, 44):
        ids, labels = store.sample(i)
        assert (ids == encoded[i].input_ids).all() and (labels == encoded[i].labels).all()
        assert store.sample_id(i) == encoded[i].id
    batches = [[[i] for i in range(j, min(j + 3, 45))] for j in range(0, 45, 3)]
    names = write_rows(tmp_path, store, batches, rows_per_record_batch=4, tokens_per_file=1000)
    store.release()
    assert not list(tmp_path.glob(".samples*"))
    assert len(names) > 1
    last, rows = -1, 0
    for name in names:
        with pa.memory_map(str(tmp_path / name), "r") as source:
            reader = pa.ipc.open_file(source)
            sizes = [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]
            assert max(sizes) <= 4
            batch_ids = reader.read_all().column("batch").to_pylist()
        assert batch_ids[0] == last + 1  # files start at a micro-batch boundary
        assert batch_ids == sorted(batch_ids)
        last, rows = batch_ids[-1], rows + len(batch_ids)
    assert rows == 45 and last == 14


def test_errors_write_nothing(tmp_path, chats):
    with pytest.raises(UserError, match="not found"):
        run(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        run(tmp_path / "empty", tmp_path / "out")
    bad = write_chats(tmp_path / "bad", BAD[:3], shards=1)
    with pytest.raises(UserError, match="no usable samples"):
        run(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    pq.write_table(pa.table({"x": [1]}), tmp_path / "empty" / "samples-00000.parquet")
    with pytest.raises(UserError, match="lacks column"):
        run(tmp_path / "empty", tmp_path / "out")


def test_cli_pack_with_truncation_option(chats, tmp_path):
    from typer.testing import CliRunner

    from longalign.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "pack", "--chats", str(chats), "-o", str(out), "--preset", "tiny", "--base-model", "embedded:tiny",
        "--strategy", "pack", "--max-len", str(MAX_LEN), "--truncation", "middle"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["max_len"], stats["truncated"]) == (MAX_LEN, 1)
    assert "too_long" not in stats["skipped"]


def test_duplicate_ids_survive_hash_collisions(tokenizer, tmp_path, monkeypatch):
    from longalign.packing import store as store_module
    from longalign.packing.stage import duplicates

    monkeypatch.setattr(store_module, "id_hash", lambda sample_id: 7)  # every id collides
    encoder = ChatEncoder(tokenizer, MAX_LEN)
    ids = ["a", "b", "a", "c", "b", "a"]
    encoded = encoder.encode_batch(ids, [GOOD[0]["messages"]] * len(ids))
    store = SampleStore(tmp_path)
    store.append(encoded)
    store.close()
    try:
        assert duplicates(store).tolist() == [2, 4, 5]  # later copies only, never "c"
    finally:
        store.release()


def test_task_formats_of_the_chats_are_carried_in_stats_and_meta(tmp_path):
    chats = [dict(sample(i, 8), task="kv_retrieval" if i % 3 == 0 else "general") for i in range(9)]
    stats = run(write_chats(tmp_path / "chats", chats), tmp_path / "out")
    assert stats["data_tasks"] == {"general": 6, "kv_retrieval": 3}
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["data_tasks"] == stats["data_tasks"]
    plain = [{k: v for k, v in s.items() if k in ("id", "messages")} for s in chats]
    (tmp_path / "plain").mkdir()
    pq.write_table(pa.Table.from_pylist(plain), tmp_path / "plain" / "samples-00000.parquet")
    assert run(tmp_path / "plain", tmp_path / "out2")["data_tasks"] == {}  # no task column: none known


def test_named_chat_template_reaches_meta_and_the_trained_tokenizer(chats, tmp_path, tokenizer):
    from longalign.config import TrainingConfig
    from longalign.packing.templates import LLAMA2_INST
    from longalign.training import train

    out = tmp_path / "packed"
    stats = pack(PackingConfig(max_len=MAX_LEN, chat_template="llama2-inst"), "embedded:tiny",
                 chats, out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["chat_template"] == LLAMA2_INST and meta["chat_template_name"] == "llama2-inst"
    assert stats["samples_packed"] == len(GOOD)
    _, tables = read_packed(out)
    first = tables[0].column("input_ids")[0].values.to_pylist()
    assert tokenizer.decode(first[:7]).startswith(tokenizer.bos_token + "[INST]")
    model = tmp_path / "model"
    train(TrainingConfig(max_steps=1, learning_rate=1e-3, warmup_ratio=0.0), "embedded:tiny",
          out, model)
    trained = load_tokenizer(str(model))
    assert trained.chat_template == LLAMA2_INST
    prompt = trained.apply_chat_template(GOOD[1]["messages"][:1], tokenize=False,
                                         add_generation_prompt=True)
    assert prompt == f"{trained.bos_token}[INST]{GOOD[1]['messages'][0]['content']}[/INST]"
    from longalign.scoring.chat import render  # what scoring sends the trained model

    assert render(trained, GOOD[1]["messages"][:1]) == prompt


def test_arrow_arrays_from_buffers_equal_pa_array():
    # the row writer builds Arrow arrays from buffers (pa.array imports pandas on first use)
    strided = np.arange(20, dtype=np.int64)[::3]
    for values in (np.array([5, -1, 2**31 - 1], np.int32), np.zeros(0, np.int32), strided,
                   np.array([-100, 7], np.int64)):
        got = _numeric(values)
        assert got.equals(pa.array(values)) and got.type == pa.from_numpy_dtype(values.dtype)
    for texts in (["a", "", "ä🙂 x", "id-" * 300], []):
        assert _strings(texts).equals(pa.array(texts, pa.string()))
