"""Sourcing with its per-document work in worker processes: the corpus of one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sourcing_helpers import write

from longalign.config import SourcingConfig
from longalign.models import load_tokenizer
from longalign.sourcing import source
from longalign.sourcing.parallel import UNIT, Preparer
from longalign.sourcing.readers import Record
from longalign.sourcing.text import TokenCounter

MODEL = "embedded:tiny"
WORDS = ("river stone cloud maple ember quartz violet harbor meadow lantern copper falcon "
         "orchid tundra saffron glacier").split()


def doc(i: int, paragraphs: int = 6) -> str:
    rng = np.random.default_rng(i)
    return "\n\n".join(f"Part {i}.{p}. " + " ".join(rng.choice(WORDS, 40)) + "."
                       for p in range(paragraphs)) + "\n"


def inputs(root: Path) -> list[str]:
    d = root / "in"
    n = 3 * UNIT + 5  # several work units per worker
    for i in range(n):
        write(d / f"f{i:03d}.txt", doc(i))
    write(d / "f040_copy.txt", doc(3))  # exact duplicate of an early file, in a later unit
    near = doc(7).replace("Part 7.5.", "Part 7.5 (revised).")
    write(d / "f045_near.txt", near)  # near duplicate of f007
    write(d / "f046_long.txt", "\n\n".join(doc(1000 + k) for k in range(12)))  # split
    write(d / "f047_bin.dat", b"\x00\x01binary")
    write(d / "f048_short.txt", "Too short.\n")
    write(root / "docs.jsonl", "\n".join(
        [json.dumps({"text": doc(200 + i)}) for i in range(UNIT + 3)]
        + [json.dumps({"text": doc(11)}), "{broken"]) + "\n")  # a streamed source
    return [f"dir:{d}", f"jsonl:{root / 'docs.jsonl'}"]


def outputs(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "lengths.png"}
    for name in ("stats.json", "result.json"):
        data = json.loads(files[name])
        config = data.get("config") or data.get("stats", {}).get("config")
        if config:
            config.pop("workers")
        files[name] = json.dumps(data, sort_keys=True).encode()
    return files


def test_three_workers_keep_the_documents_one_process_keeps(tmp_path: Path) -> None:
    specs = inputs(tmp_path)
    base = dict(sources=specs, min_tokens=100, max_tokens=700, near_dup_threshold=0.7)
    one = source(SourcingConfig(**base), MODEL, tmp_path / "one")
    three = source(SourcingConfig(**base, workers=3), MODEL, tmp_path / "three")
    rejected = one["rejected"]
    assert rejected["duplicate"] == 2 and rejected["near_duplicate"] == 1
    assert rejected["binary"] == 1 and rejected["too_short"] == 1
    assert one["selection"]["candidates_visited"] == three["selection"]["candidates_visited"]
    assert one["documents_kept"] > 3 * UNIT
    a, b = outputs(tmp_path / "one"), outputs(tmp_path / "three")
    assert sorted(a) == sorted(b) and any(n.endswith(".parquet") for n in a)
    for name in a:
        assert a[name] == b[name], name


def test_prepared_values_equal_the_stage_functions(tmp_path: Path) -> None:
    from longalign.sourcing.neardup import NearDuplicates
    from longalign.sourcing.text import sha256_hex

    config = SourcingConfig(sources=["stdlib:"], near_dup_threshold=0.8, near_dup_num_perm=64)
    counter = TokenCounter(load_tokenizer(MODEL))
    texts = [doc(1), doc(2, 30), "x\x00y", "   ", "caf\u0065\u0301 " + doc(3)]
    got = Preparer(config, counter).prepare([Record(f"u{i}", t) for i, t in enumerate(texts)])
    near = NearDuplicates(0.8, 64)
    assert [p.reason for p in got] == ["", "", "binary", "empty", ""]
    for p, t in zip(got, texts):
        if p.text is not None:
            assert p.digest == sha256_hex(p.text) and p.n_tokens == counter.count([p.text])[0]
            assert (p.signature == near.signature(p.text).hashvalues).all()
    assert got[4].text.startswith("caf\u00e9")  # NFC-normalised, as the one-process path


def test_parts_as_separate_map_stages_and_the_reduce_equal_one_process(tmp_path: Path) -> None:
    import pytest

    from longalign.errors import UserError
    from longalign.sourcing.shards import source_shard

    specs = inputs(tmp_path)
    config = SourcingConfig(sources=specs, min_tokens=100, max_tokens=700, near_dup_threshold=0.7)
    source(config, MODEL, tmp_path / "one")
    parts = [tmp_path / f"part-{k}" for k in range(3)]
    ranges = [source_shard(config, MODEL, p, k, 3)["range"] for k, p in enumerate(parts)]
    # the directory's files and the JSONL file's lines (two malformed) are segments each
    assert ranges[0][0] == 0 and ranges[0][1] == ranges[1][0] and ranges[2][1] == 3 * UNIT + 10 + UNIT + 5
    source(config, MODEL, tmp_path / "joined", parts=parts[::-1])  # any order
    assert outputs(tmp_path / "one") == outputs(tmp_path / "joined")
    with pytest.raises(UserError, match="without gaps"):
        source(config, MODEL, tmp_path / "gap", parts=[parts[0], parts[2]])
    with pytest.raises(UserError, match="source order"):
        source_shard(config.model_copy(update={"max_documents": 5}), MODEL, tmp_path / "p", 0, 3)


def test_a_worker_that_lists_another_number_of_candidates_stops(tmp_path: Path, monkeypatch) -> None:
    import os

    import pytest

    from longalign.errors import UserError
    from longalign.sourcing import parallel
    from longalign.sourcing.parallel import prepare_unit

    # run the worker function in this process without leaving its state or settings behind
    monkeypatch.setattr(parallel, "_WORKER", {})
    monkeypatch.setenv("RAYON_NUM_THREADS", os.environ.get("RAYON_NUM_THREADS", "2"))

    for i in range(3):
        write(tmp_path / "in" / f"f{i}.txt", doc(i))
    config = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"]).model_dump()
    [(items, [prepared])] = prepare_unit(config, MODEL, f"dir:{tmp_path / 'in'}", 1, 2, None, 1, 3)
    assert items[0].uri.endswith("f1.txt") and prepared.text == doc(1)
    with pytest.raises(UserError, match="changed while it was read"):
        prepare_unit(config, MODEL, f"dir:{tmp_path / 'in'}", 1, 2, None, 1, 4)


def test_row_sources_are_cut_between_pods_at_lines_and_row_groups(tmp_path: Path) -> None:
    # One big JSONL file, data files streamed by datasets, gzip JSONL files (one broken off),
    # Parquet files with several row groups and an empty source: each pod gets a contiguous run
    # of their segments (a line, a data file, a row group),
    # so no single pod reads a whole row source, and the reduce equals one process.
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from longalign.sourcing.readers import open_reader
    from longalign.sourcing.shards import PREPARED, _weights, source_shard

    lines = [json.dumps({"text": doc(300 + i)}) for i in range(9)]
    lines[4] = json.dumps({"text": doc(302)})  # an exact duplicate across a pod boundary
    write(tmp_path / "big.jsonl", "\n".join(lines[:6] + ["", "{broken"] + lines[6:]) + "\n")
    (tmp_path / "gz").mkdir()
    with gzip.open(tmp_path / "gz" / "a.jsonl.gz", "wt") as handle:
        handle.write("\n\n".join(json.dumps({"text": doc(400 + i)}) for i in range(6)) + "\n")
    whole = gzip.compress("".join(json.dumps({"text": doc(450 + i)}) + "\n"
                                  for i in range(6)).encode())
    (tmp_path / "gz" / "b.jsonl.gz").write_bytes(whole[:len(whole) * 2 // 3])  # breaks off
    table = pa.table({"text": [doc(500 + i) for i in range(10)] + [doc(301)],  # a late copy
                      "lang": ["en"] * 11})
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 7), tmp_path / "pq" / "a.parquet", row_group_size=2)
    pq.write_table(table.slice(7), tmp_path / "pq" / "b.parquet", row_group_size=2)
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "none.jsonl", "\n")
    for k in range(6):  # data files streamed by the datasets library: one segment each
        write(tmp_path / "h" / f"part-{k}.jsonl",
              "".join(json.dumps({"text": doc(600 + 2 * k + i)}) + "\n" for i in range(2)))
    specs = [f"jsonl:{tmp_path / 'big.jsonl'}", f"hf:{tmp_path / 'h'}", f"jsonl:{tmp_path / 'gz'}",
             f"parquet:{tmp_path / 'pq'}", f"jsonl:{tmp_path / 'empty'}"]
    readers = [open_reader(spec) for spec in specs]
    for reader in readers:
        reader.index()
    [(_, six), (_, broken)] = readers[2].gz
    assert six == 6 and 0 < broken < 6
    # 10 non-blank lines (one malformed); per gzip file its lines and a tail (b's: its
    # rejection); 4 + 2 row groups; an empty source
    assert _weights(readers) == [10, 6, 6 + 1 + broken + 1, 6, 0]
    config = SourcingConfig(sources=specs, min_tokens=100, max_tokens=700, near_dup_threshold=0.7)
    one = source(config, MODEL, tmp_path / "one")
    assert one["rejected"]["duplicate"] == 2 and one["rejected"]["malformed"] == 1
    assert one["rejected"]["corrupt"] == 1
    parts = [tmp_path / f"part-{k}" for k in range(8)]  # 4-5 segments each
    summaries = [source_shard(config, MODEL, p, k, 8) for k, p in enumerate(parts)]
    assert all(s["candidates"] > 0 for s in summaries)
    assert sum(s["candidates"] for s in summaries) == 10 + 12 + 6 + broken + 1 + 11
    uris = [set(pq.read_table(p / PREPARED, columns=["uri"]).column("uri").to_pylist())
            for p in parts]
    holding = {name: sum(any(name in u for u in part) for part in uris)
               for name in ("big.jsonl:", "h::train#", "a.jsonl.gz:", ".parquet:")}
    assert min(holding.values()) >= 2, holding  # each of these sources was cut between pods
    joined = source(config, MODEL, tmp_path / "joined", parts=parts[::-1])
    assert outputs(tmp_path / "one") == outputs(tmp_path / "joined")
    assert joined["selection"]["candidates_visited"] == one["selection"]["candidates_visited"]
