"""The pretrain objective on text rows: token-averaged loss, document masking and its ablation,
checked against each document (or the whole row) run alone through the same model."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from training_helpers import one_thread  # noqa: F401 (fixture)

from longalign.config import PackingConfig, TrainingConfig
from longalign.formats import CORPUS
from longalign.models import load_model
from longalign.packing import pack
from longalign.training import train
from longalign.training.data import PackedData

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_LEN = 512


@pytest.fixture(scope="module")
def text_packed(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("text")
    docs = [{"id": f"d{i}", "source": "t", "uri": "", "n_tokens": 0, "content_hash": str(i),
             "language": "en", "metadata": "{}",
             "text": f"Text {i}: " + " ".join(f"t{(i * 7 + k) % 41}" for k in range(12 + 5 * i))}
            for i in range(5)]
    (root / "corpus").mkdir()
    pq.write_table(pa.Table.from_pylist(docs, schema=CORPUS.schema),
                   root / "corpus" / "documents-00000.parquet")
    pack(PackingConfig(format="text", max_len=MAX_LEN), tiny_model, root / "corpus", root / "p")
    return root / "p"


def _first_row(packed):
    data = PackedData(packed)
    mb = data.batches[0]
    return data, mb, data.load(mb)


def _reference_loss(model, segments: list[torch.Tensor]) -> float:
    """Token-mean cross-entropy of each segment run alone, pooled over all their targets."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in segments:
            logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1].double()
            total += float(F.cross_entropy(logits, ids[1:], reduction="sum"))
            count += len(ids) - 1
    return total / count


def test_pretrain_config_is_token_averaged():
    assert TrainingConfig(objective="pretrain").loss == "token"
    with pytest.raises(ValueError, match="pretrain"):
        TrainingConfig(objective="pretrain", loss="longalign")


def test_document_masking_off_reads_a_text_row_as_one_sequence(text_packed):
    data, mb, masked = _first_row(text_packed)
    assert len(mb.seq_lens[0]) > 1  # several documents share the row
    off = PackedData(text_packed, document_masking=False)
    mb_off = off.batches[0]
    batch = off.load(mb_off)
    width = sum(mb.seq_lens[0])
    assert mb_off.seq_lens == [[width]] and mb_off.n_targets == [[width - 1]]
    assert batch.position_ids[0].tolist() == list(range(width))
    assert torch.equal(batch.input_ids, masked.input_ids)
    assert batch.labels[0, 0] == -100 and torch.equal(batch.labels[0, 1:], batch.input_ids[0, 1:])


@pytest.mark.parametrize("masking", [True, False])
def test_first_step_loss_equals_documents_run_alone(tmp_path, text_packed, tiny_model, masking):
    data, mb, batch = _first_row(text_packed)
    assert len(data.batches) == 1  # one row: the first step's loss is that row's loss
    cfg = TrainingConfig(objective="pretrain", document_masking=masking, max_steps=1,
                         learning_rate=1e-9, warmup_ratio=0.0, bf16=False)
    stats = train(cfg, tiny_model, text_packed, tmp_path / "m")
    assert stats["objective"] == "pretrain" and stats["loss_mode"] == "token"
    assert stats["document_masking"] is masking and stats["data_format"] == "text"
    ids = batch.input_ids[0]
    bounds = torch.tensor([0, *mb.seq_lens[0]]).cumsum(0).tolist()
    documents = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    model = load_model(tiny_model).eval()
    want = _reference_loss(model, documents if masking else [ids])
    other = _reference_loss(model, [ids] if masking else documents)
    assert stats["loss"][0] == pytest.approx(want, rel=1e-4)
    assert abs(stats["loss"][0] - other) > 1e-3  # the two settings are told apart


def test_pretrain_saves_the_new_rope_settings(tmp_path, text_packed, tiny_model):
    cfg = TrainingConfig(objective="pretrain", rope_theta=123456.0, max_position_embeddings=4096,
                         max_steps=1, learning_rate=1e-3, warmup_ratio=0.0, bf16=False)
    train(cfg, tiny_model, text_packed, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    params = saved.get("rope_parameters") or saved
    assert params["rope_theta"] == 123456.0 and saved["max_position_embeddings"] == 4096
