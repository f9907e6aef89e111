"""The packing stage: chats -> tokenised samples -> planned rows -> Arrow shards + stats.

Pass 1 tokenises the chats in batches of ``ENCODE_BATCH`` conversations and appends the usable
samples to a temporary Arrow file (see ``longalign.packing.store``), keeping only their lengths in
memory. The layout is then planned from the lengths (``plan_packs``, ``plan_sorted`` or
``plan_naive``), and pass 2 writes the rows in that order from the memory-mapped temporary file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, read_parquet_dir, write_json
from longalign.models import load_tokenizer
from longalign.packing.encode import ChatEncoder, Encoded
from longalign.packing.plan import (packed_efficiency, padded_efficiency, plan_naive, plan_packs,
                                    plan_sorted)
from longalign.packing.report import Tally, build_stats, plot_lengths, summary_markdown
from longalign.packing.store import SampleStore, write_rows
from longalign.progress import track

log = logging.getLogger("longalign")
SCHEMA_VERSION = 1
ENCODE_BATCH = 64
REQUIRED_COLUMNS = ("id", "messages")


def plan_batches(config: PackingConfig, lengths: np.ndarray) -> tuple[list[list[list[int]]], float]:
    """Micro-batches (lists of rows of sample indices) for the configured strategy, and the
    strategy's efficiency."""
    if config.strategy == "pack":
        rows = plan_packs(lengths, config.max_len, seed=config.seed)
        return [[row] for row in rows], packed_efficiency(lengths, rows, config.max_len)
    if config.strategy == "sort":
        groups = plan_sorted(lengths, config.batch_size, seed=config.seed)
    else:
        groups = plan_naive(len(lengths), config.batch_size, seed=config.seed)
    return [[[i] for i in g] for g in groups], padded_efficiency(lengths, groups)


def _read_chats(chats: str | os.PathLike) -> pa.Table:
    table = read_parquet_dir(chats, "chats", "samples")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"chats {chats} lack column(s) {', '.join(missing)}: is it the generation output?")
    return table


def _encode_all(table: pa.Table, encoder: ChatEncoder, store: SampleStore,
                tally: Tally) -> tuple[np.ndarray, np.ndarray]:
    lengths: list[int] = []
    targets: list[int] = []
    seen: set[str] = set()
    starts = range(0, table.num_rows, ENCODE_BATCH)
    for start in track(starts, "tokenising chats"):
        part = table.slice(start, ENCODE_BATCH)
        ids = part.column("id").to_pylist()
        conversations = part.column("messages").to_pylist()
        tally.samples_in += len(ids)
        usable: list[tuple[str, Any]] = []
        for n, (sample_id, conv) in enumerate(zip(ids, conversations)):
            sample_id = str(sample_id) if sample_id is not None else ""
            if not sample_id:
                tally.skip(f"row {start + n}", "malformed", "missing id")
            elif sample_id in seen:
                tally.skip(sample_id, "duplicate_id", "an earlier sample has the same id")
            else:
                seen.add(sample_id)
                usable.append((sample_id, conv))
        results = encoder.encode_batch([u[0] for u in usable], [u[1] for u in usable])
        kept: list[Encoded] = []
        for r in results:
            if isinstance(r, Encoded):
                kept.append(r)
                tally.truncated += r.truncated
                lengths.append(len(r.input_ids))
                targets.append(r.n_targets)
            else:
                tally.skip(r.id, r.reason, r.detail)
        store.append(kept)
    return np.asarray(lengths, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def pack(config: PackingConfig, model: str, chats: str | os.PathLike, output: str | os.PathLike,
         *, overwrite: bool = False) -> dict:
    """Tokenise the generation stage's chats with ``model``'s chat template and write packed rows.

    Writes ``output``/rows-NNNNN.arrow (schema in ``longalign.packing.store.ROW_SCHEMA``),
    meta.json, stats.json, summary.md and lengths.png, atomically; returns the stats. Bad samples
    are skipped and counted per reason. Raises UserError for a missing or empty input, or when no
    sample is left; nothing is written then.
    """
    table = _read_chats(chats)
    if table.num_rows == 0:
        raise UserError(f"chats {chats} hold no samples")
    tokenizer = load_tokenizer(model)
    encoder = ChatEncoder(tokenizer, config.max_len, config.truncation, config.label_turns)
    tally = Tally()
    with atomic_dir(output, overwrite=overwrite) as tmp:
        store = SampleStore(Path(tmp) / ".samples.arrow")
        try:
            lengths, targets = _encode_all(table, encoder, store, tally)
        finally:
            store.close()
        del table
        if len(lengths) == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(tally.skipped.items()))
            raise UserError(f"no usable samples in {chats} ({tally.samples_in} read; skipped {reasons})")
        batches, efficiency = plan_batches(config, lengths)
        samples = store.open()
        files = write_rows(Path(tmp), samples, lengths,
                           track(batches, f"writing {config.strategy} rows"))
        del samples
        store.path.unlink()
        stats = build_stats(tally=tally, strategy=config.strategy, max_len=config.max_len,
                            batch_size=config.batch_size, lengths=lengths, targets=targets,
                            batches=batches, efficiency=efficiency, files=files)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "strategy": config.strategy,
            "max_len": config.max_len,
            "model": model,
            "pad_token_id": int(tokenizer.pad_token_id or 0),
            "rows": stats["rows"],
            "batches": stats["batches"],
            "samples": stats["samples_packed"],
            "tokens": stats["tokens"],
            "config": config.model_dump(),
        }
        write_json(Path(tmp) / "meta.json", meta)
        write_json(Path(tmp) / "stats.json", stats)
        (Path(tmp) / "summary.md").write_text(summary_markdown(stats, model))
        plot_lengths(stats, Path(tmp) / "lengths.png")
    log.info("packing: %d samples -> %d rows in %d batches, efficiency %.4f (%d skipped)",
             stats["samples_packed"], stats["rows"], stats["batches"], efficiency,
             stats["skipped_total"])
    return stats
