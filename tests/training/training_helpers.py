"""Helpers for the training tests: tiny models, packed directories written with pyarrow."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longalign.formats import IGNORE, PACKED, ShardWriter, write_packed_meta

def tiny_llama(vocab: int = 97, dtype=torch.float32, seed: int = 0, **kw) -> LlamaForCausalLM:
    """A 2-layer GQA Llama with the default config (use_cache=True)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      **kw)
    return LlamaForCausalLM(cfg).to(dtype)


def make_samples(n: int, vocab: int, seed: int = 0, min_len: int = 4, max_len: int = 24,
                 ) -> list[tuple[list[int], list[int]]]:
    """Chat-like samples: a prompt (labels -100) followed by an answer (labels = ids)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        out.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def write_packed(directory: Path, samples: list[tuple[list[int], list[int]]], *,
                 strategy: str = "pack", max_len: int = 64, batch_size: int = 1,
                 pad_token_id: int = 0, model: str = "embedded:tiny", shards: int = 1) -> Path:
    """A packing-stage output: next-fit rows for ``pack``, ``batch_size`` rows per batch else."""
    directory.mkdir(parents=True, exist_ok=True)
    groups: list[list[int]] = []
    if strategy == "pack":
        for i, (ids, _) in enumerate(samples):
            if groups and sum(len(samples[j][0]) for j in groups[-1]) + len(ids) <= max_len:
                groups[-1].append(i)
            else:
                groups.append([i])
        rows = [(g, b) for b, g in enumerate(groups)]
    else:
        order = list(range(len(samples)))
        if strategy == "sort":
            order.sort(key=lambda i: len(samples[i][0]))
        rows = [([i], k // batch_size) for k, i in enumerate(order)]
    records = []
    for members, batch in rows:
        ids = [t for i in members for t in samples[i][0]]
        labels = [t for i in members for t in samples[i][1]]
        records.append({
            "input_ids": ids, "labels": labels,
            "seq_lens": [len(samples[i][0]) for i in members],
            "n_targets": [sum(1 for t in samples[i][1] if t != IGNORE) for i in members],
            "sample_ids": [f"s{i}" for i in members], "batch": batch,
        })
    per = -(-len(records) // shards)
    writer = ShardWriter(PACKED, directory)
    for s in range(shards):
        part = records[s * per:(s + 1) * per]
        for k in range(0, len(part), 2):  # two rows per record batch
            writer.write_batch(pa.RecordBatch.from_pylist(part[k:k + 2], schema=PACKED.schema))
        writer.close_shard()
    writer.flush()
    write_packed_meta(directory, strategy=strategy, max_len=max_len, model=model,
                      pad_token_id=pad_token_id, rows=len(records),
                      batches=len({r["batch"] for r in records}), samples=len(samples),
                      tokens=sum(len(r["input_ids"]) for r in records))
    return directory


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread (and are not starved when the machine is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
