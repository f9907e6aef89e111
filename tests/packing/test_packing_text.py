"""Text packing (format "text"): plain documents, every token a target, long documents split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import CORPUS, IGNORE, read_packed
from longalign.models import load_tokenizer
from longalign.packing import pack
from longalign.packing.encode import Encoded, Skipped
from longalign.packing.text import TextEncoder

MAX_LEN = 256


def document(i: int, words: int) -> dict:
    text = f"Document {i}. " + " ".join(f"w{(i * 31 + k) % 97}" for k in range(words))
    return {"id": f"doc{i:03d}", "source": "test", "uri": f"mem://{i}", "text": text,
            "n_tokens": words, "content_hash": str(i), "language": "en", "metadata": "{}"}


def write_corpus(directory: Path, docs: list[dict], shards: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        pq.write_table(pa.Table.from_pylist(docs[s::shards], schema=CORPUS.schema),
                       directory / f"documents-{s:05d}.parquet")
    return directory


DOCS = [document(i, words=10 + (i * 53) % 400) for i in range(24)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def doc_tokens(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return ids + [tokenizer.eos_token_id]


def test_encoder_short_document_every_token_a_target_but_the_first(tokenizer):
    enc = TextEncoder(tokenizer, MAX_LEN)
    [s] = list(enc.encode_stream([("a", "Hello there, plain text.")]))
    want = doc_tokens(tokenizer, "Hello there, plain text.")
    assert s.input_ids.tolist() == want and s.input_ids[-1] == tokenizer.eos_token_id
    assert s.labels[0] == IGNORE and s.labels[1:].tolist() == want[1:]


@pytest.mark.parametrize("chunk_chars", [1, 300, None])
def test_encoder_streams_in_order_each_document_with_its_own_tokens(tokenizer, chunk_chars):
    # several documents per tokenizer call (chunk_chars None: all in one), one per call (1), or
    # a few; a repeated id keeps each document's own tokens (the stage drops the later copy)
    docs = [("a", DOCS[0]["text"]), ("b", ""), ("a", DOCS[1]["text"]), ("c", DOCS[2]["text"])]
    out = list(TextEncoder(tokenizer, 1 << 16).encode_stream(docs, chunk_chars=chunk_chars))
    assert [(o.id, type(o).__name__) for o in out] == [
        ("a", "Encoded"), ("b", "Skipped"), ("a", "Encoded"), ("c", "Encoded")]
    for o, (_, text) in zip(out, docs):
        if text:
            assert o.input_ids.tolist() == doc_tokens(tokenizer, text)


def test_encoder_splits_long_documents_into_full_pieces_and_a_remainder(tokenizer):
    text = DOCS[5]["text"] * 3
    want = doc_tokens(tokenizer, text)
    assert len(want) > 2 * 100
    pieces = list(TextEncoder(tokenizer, 100).encode_stream([("long", text)]))
    assert [p.id for p in pieces] == [f"long#{k}" for k in range(len(pieces))]
    assert all(len(p.input_ids) == 100 for p in pieces[:-1]) and 0 < len(pieces[-1].input_ids) <= 100
    assert np.concatenate([p.input_ids for p in pieces]).tolist() == want
    assert all(p.labels[0] == IGNORE and (p.labels[1:] == p.input_ids[1:]).all() for p in pieces)


def test_encoder_without_splitting_drops_or_keeps_both_ends(tokenizer):
    text = DOCS[5]["text"] * 3
    want = doc_tokens(tokenizer, text)
    [dropped] = list(TextEncoder(tokenizer, 100, split_long=False).encode_stream([("x", text)]))
    assert isinstance(dropped, Skipped) and dropped.reason == "too_long"
    [kept] = list(TextEncoder(tokenizer, 100, split_long=False, truncation="middle")
                  .encode_stream([("x", text)]))
    assert isinstance(kept, Encoded) and kept.truncated
    assert kept.input_ids.tolist() == want[:50] + want[-50:]
    assert kept.labels[0] == IGNORE and kept.labels[50] == IGNORE
    assert int((kept.labels != IGNORE).sum()) == 98


def test_encoder_skips_empty_documents(tokenizer):
    out = list(TextEncoder(tokenizer, MAX_LEN).encode_stream([("e", "  "), ("n", None), ("ok", "x y")]))
    assert [(type(r).__name__, r.id) for r in out] == [("Skipped", "e"), ("Skipped", "n"),
                                                       ("Encoded", "ok")]


def test_pack_text_rows_hold_every_document_token_as_a_target(tmp_path, tokenizer, tiny_model):
    corpus = write_corpus(tmp_path / "corpus", DOCS + [document(99, 1200)])
    stats = pack(PackingConfig(format="text", max_len=MAX_LEN), tiny_model, corpus, tmp_path / "p")
    meta, tables = read_packed(tmp_path / "p")
    assert meta["format"] == "text" and meta["max_len"] == MAX_LEN
    got: dict[str, list[int]] = {}
    full_rows = 0
    for table in tables:
        for row in table.to_pylist():
            assert sum(row["seq_lens"]) == len(row["input_ids"]) <= MAX_LEN
            full_rows += len(row["input_ids"]) == MAX_LEN
            start = 0
            for sid, n, t in zip(row["sample_ids"], row["seq_lens"], row["n_targets"]):
                ids, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
                assert labels[0] == IGNORE and labels[1:] == ids[1:] and t == n - 1
                got[sid] = ids
                start += n
    def joined(doc_id):  # the document whole, or its pieces in order
        if doc_id in got:
            return got[doc_id], 1
        pieces = sorted((k for k in got if k.startswith(doc_id + "#")),
                        key=lambda k: int(k.split("#")[1]))
        assert all(len(got[k]) == MAX_LEN for k in pieces[:-1])
        return sum((got[k] for k in pieces), []), len(pieces)

    split = 0
    for d in DOCS + [document(99, 1200)]:
        want = doc_tokens(tokenizer, d["text"])
        tokens, pieces = joined(d["id"])
        assert tokens == want and pieces == -(-len(want) // MAX_LEN)
        split += pieces > 1
        full_rows -= len(want) // MAX_LEN if pieces > 1 else 0
    assert split >= 2 and full_rows >= 0  # every full piece filled a row
    assert stats["samples_packed"] == len(got)
    assert json.loads((tmp_path / "p" / "stats.json").read_text())["rows"] == stats["rows"]


def test_pack_text_refuses_a_chat_folder(tmp_path, tiny_model):
    (tmp_path / "chats").mkdir()
    pq.write_table(pa.table({"id": ["a"], "messages": [[{"role": "user", "content": "x"}]]}),
                   tmp_path / "chats" / "samples-00000.parquet")
    with pytest.raises(UserError, match="corpus"):
        pack(PackingConfig(format="text", max_len=MAX_LEN), tiny_model, tmp_path / "chats",
             tmp_path / "out")
    assert not (tmp_path / "out").exists()
