"""Reading packed directories: grouping, padding, positions and user errors."""

import json

import pytest
import torch
from training_helpers import make_samples, write_packed

from longalign.errors import UserError
from longalign.formats import PACKED, write_rows
from longalign.training.data import PackedData


def test_pack_rows_are_read_lazily_across_shards(tmp_path):
    samples = make_samples(9, 50, seed=2)
    write_packed(tmp_path / "p", samples, strategy="pack", max_len=48, shards=2)
    data = PackedData(tmp_path / "p")
    assert data.strategy == "pack" and data.samples == 9
    assert all(len(mb.rows) == 1 for mb in data.batches)
    flat = [s for mb in data.batches for s in mb.seq_lens[0]]
    assert flat == [len(s) for s, _ in samples]
    batch = data.load(data.batches[0])
    lens = data.batches[0].seq_lens[0]
    assert batch.input_ids.shape == (1, sum(lens))
    assert batch.position_ids[0].tolist() == [i for n in lens for i in range(n)]
    assert batch.input_ids[0].tolist() == [t for s, _ in samples[:len(lens)] for t in s]


def test_sort_batches_are_right_padded(tmp_path):
    samples = make_samples(5, 50, seed=4)
    write_packed(tmp_path / "p", samples, strategy="sort", batch_size=2, pad_token_id=7)
    data = PackedData(tmp_path / "p")
    assert [len(mb.rows) for mb in data.batches] == [2, 2, 1]
    mb = data.batches[0]
    batch = data.load(mb)
    short, width = mb.seq_lens[0][0], mb.width
    assert batch.input_ids.shape == (2, width) and short <= width
    assert batch.input_ids[0, short:].eq(7).all() and batch.labels[0, short:].eq(-100).all()
    assert batch.position_ids[0].tolist() == list(range(width))  # padding continues the count
    assert mb.tokens == sum(r[0] for r in mb.seq_lens)


def test_missing_and_empty_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        PackedData(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="missing file"):
        PackedData(tmp_path / "empty")
    write_packed(tmp_path / "p", make_samples(2, 50))
    for f in (tmp_path / "p").glob("rows-*.arrow"):
        f.unlink()
    with pytest.raises(UserError, match="no rows-"):
        PackedData(tmp_path / "p")
    write_rows(PACKED, tmp_path / "p", [])
    with pytest.raises(UserError, match="holds no rows"):
        PackedData(tmp_path / "p")


def test_inconsistent_rows_are_user_errors(tmp_path):
    write_packed(tmp_path / "p", make_samples(2, 50))
    path = tmp_path / "p" / "rows-00000.arrow"
    row = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "seq_lens": [2],
           "n_targets": [2], "sample_ids": ["a"], "batch": 0}
    path.unlink()
    write_rows(PACKED, tmp_path / "p", [row])
    with pytest.raises(UserError, match="seq_lens sum 2"):
        PackedData(tmp_path / "p")
    rows = [dict(row, seq_lens=[3], batch=b) for b in (0, 1, 0)]
    path.unlink()
    write_rows(PACKED, tmp_path / "p", rows)
    with pytest.raises(UserError, match="not consecutive"):
        PackedData(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    (tmp_path / "p" / "meta.json").write_text(json.dumps(dict(meta, schema_version=9)))
    with pytest.raises(UserError, match="is format version 9, this longalign reads version 1"):
        PackedData(tmp_path / "p")


def test_token_ids_beyond_the_vocabulary_are_user_errors(tmp_path):
    write_packed(tmp_path / "p", make_samples(2, 50))
    data = PackedData(tmp_path / "p")
    with pytest.raises(UserError, match="vocabulary size 10"):
        data.load(data.batches[0], vocab_size=10)
    assert data.load(data.batches[0], vocab_size=50).input_ids.dtype == torch.long


def test_samples_without_targets_are_counted(tmp_path):
    samples = make_samples(3, 50)
    samples[1] = (samples[1][0], [-100] * len(samples[1][0]))
    write_packed(tmp_path / "p", samples)
    data = PackedData(tmp_path / "p")
    assert data.samples_without_targets == 1
    assert sum(mb.num_sequences for mb in data.batches) == 2
