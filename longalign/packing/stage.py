"""The packing stage: chats -> tokenised samples -> planned rows -> Arrow shards + stats.

Everything streams. Pass 1 reads the chat shards a record batch at a time, tokenises them in
chunks (``ChatEncoder.encode_stream``) and appends the usable samples to a temporary
``SampleStore`` on disk, keeping only a few numbers per sample in memory. Duplicate ids are then
found from 64-bit id hashes (confirmed on the stored strings) and the later copies skipped. The
layout is planned from the lengths (``plan_packs``, ``plan_sorted`` or ``plan_naive``), and pass 2
writes the rows in that order, one record batch at a time, reading the samples back with
positional reads. Peak memory is one chunk of chats plus one record batch of rows, plus about
24 bytes per sample.

With ``config.workers`` > 1, pass 1 is a map over that many contiguous parts of the input in
worker processes (``longalign.packing.parallel``) whose stores are joined in input order; the
dedup, the plan and pass 2 run once over the joined store, so the rows equal the one-process
rows byte for byte.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import write_packed_meta
from longalign.io import atomic_dir
from longalign.models import load_tokenizer
from longalign.packing.parallel import (encode_into, encode_parallel, input_shards, make_encoder,
                                        read_parts)
from longalign.packing.plan import (packed_efficiency, padded_efficiency, plan_naive, plan_packs,
                                    plan_sorted)
from longalign.packing.report import Tally, build_stats, plot_lengths, summary_markdown
from longalign.packing.store import SampleStore, write_rows
from longalign.progress import track
from longalign.results import StageResult, numeric

log = logging.getLogger("longalign")


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


def duplicates(store: SampleStore) -> np.ndarray:
    """Indices of stored samples whose id already occurred at a smaller index."""
    order = np.argsort(store.hashes, kind="stable")
    h = store.hashes[order]
    same = np.flatnonzero(h[1:] == h[:-1])  # order[k + 1] has the hash of order[k]
    dup: set[int] = set()
    for k in same.tolist():
        # walk back over the run of equal hashes: compare the strings (a hash collision is not a
        # duplicate)
        i = int(order[k + 1])
        j = k
        sid = store.sample_id(i)
        while j >= 0 and h[j] == h[k + 1]:
            if store.sample_id(int(order[j])) == sid:
                dup.add(i)
                break
            j -= 1
    return np.asarray(sorted(dup), dtype=np.int64)


def pack(config: PackingConfig, model: str, chats: str | os.PathLike, output: str | os.PathLike,
         *, overwrite: bool = False) -> StageResult:
    """Tokenise the generation stage's chats with ``model``'s chat template and write packed rows;
    with ``config.format == "text"``, ``chats`` is the sourcing stage's corpus instead and its
    documents are packed as plain text (``longalign.packing.text``).

    Writes ``output``/rows-NNNNN.arrow (``longalign.formats.PACKED``),
    meta.json, stats.json, summary.md and lengths.png, atomically; returns the StageResult. Bad samples
    are skipped and counted per reason. Raises UserError for a missing or empty input, or when no
    sample is left; nothing is written then.
    """
    files = input_shards(config, chats)
    tokenizer = load_tokenizer(model)
    encoder = make_encoder(config, tokenizer)
    workers = min(config.workers or os.cpu_count() or 1, files.num_rows)
    with atomic_dir(output, overwrite=overwrite) as tmp:
        if workers > 1:  # the map in worker processes; the parts joined in input order
            store, tally = encode_parallel(config, model, files, tmp, workers, encoder)
        else:
            store, tally = SampleStore(tmp), Tally()
            try:
                encode_into(files, encoder, store, tally)
                store.close()
            except BaseException:
                store.release()
                raise
        return _reduce(config, model, tokenizer, encoder, store, tally, str(chats), output, tmp)


def pack_parts(config: PackingConfig, model: str, parts: list[str | os.PathLike],
               output: str | os.PathLike, *, overwrite: bool = False) -> StageResult:
    """The reduce of a sharded run: join the map outputs ``parts`` (of
    ``longalign.packing.parallel.encode_shard``, in any order: each records its input rows),
    drop duplicate ids over all of them, plan and write the rows. The output equals ``pack`` over
    the same input. Parts that leave a gap in the rows are a UserError."""
    tally, stems = read_parts(parts)
    tokenizer = load_tokenizer(model)
    encoder = make_encoder(config, tokenizer)
    store = SampleStore.join(stems, owned=False)
    with atomic_dir(output, overwrite=overwrite) as tmp:
        return _reduce(config, model, tokenizer, encoder, store, tally,
                       f"{len(parts)} packing parts", output, tmp)


@dataclass
class Plan:
    """The reduce's decisions over a closed store: which samples are kept and how they are laid
    out (micro-batches of rows of sample indices into the store)."""

    lengths: np.ndarray  # of the kept samples, in input order
    targets: np.ndarray
    batches: list[list[list[int]]]
    efficiency: float


def plan_store(config: PackingConfig, store: SampleStore, tally: Tally, where: str) -> Plan:
    """Skip duplicate ids (counted in ``tally``) and plan the rows of the closed ``store``."""
    keep = np.ones(store.count, dtype=bool)
    for i in duplicates(store).tolist():
        tally.skip(store.sample_id(i), "duplicate_id", "an earlier sample has the same id")
        keep[i] = False
    index = np.flatnonzero(keep)  # position in the plan -> sample in the store
    lengths, targets = store.lengths[index], store.targets[index]
    if len(lengths) == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(tally.skipped.items()))
        raise UserError(f"no usable samples in {where} ({tally.samples_in} read; "
                        f"skipped {reasons})")
    batches, efficiency = plan_batches(config, lengths)
    if len(index) < store.count:
        batches = [[index[row].tolist() for row in b] for b in batches]
    return Plan(lengths, targets, batches, efficiency)


def _reduce(config: PackingConfig, model: str, tokenizer, encoder, store: SampleStore,
            tally: Tally, where: str, output: str | os.PathLike, tmp: Path) -> StageResult:
    """Dedup, plan and write the rows of the closed ``store`` into ``tmp``; releases it."""
    try:
        plan = plan_store(config, store, tally, where)
        files = write_rows(Path(tmp), store, track(plan.batches, f"writing {config.strategy} rows"),
                           tokens_per_file=config.tokens_per_file)
    finally:
        store.release()
    return finish(config, model, tokenizer, encoder, plan, tally, files, output, tmp)


def finish(config: PackingConfig, model: str, tokenizer, encoder, plan: Plan, tally: Tally,
           files: list[str], output: str | os.PathLike, tmp: Path, **meta_extra) -> StageResult:
    """Write the output's stats, meta.json (``meta_extra`` added), result, summary and plot for
    ``plan`` written as row files ``files``."""
    stats = build_stats(tally=tally, strategy=config.strategy, max_len=config.max_len,
                        batch_size=config.batch_size, lengths=plan.lengths, targets=plan.targets,
                        batches=plan.batches, efficiency=plan.efficiency, files=files)
    write_packed_meta(tmp, strategy=config.strategy, max_len=config.max_len, model=model,
                      format=config.format,
                      pad_token_id=int(tokenizer.pad_token_id or 0),
                      # the Jinja form of the template the rows were rendered with; training
                      # saves it with the model's tokenizer, so scoring prompts the model the
                      # same way
                      chat_template=encoder.template,
                      chat_template_name=encoder.template_name, rows=stats["rows"],
                      batches=stats["batches"], samples=stats["samples_packed"],
                      tokens=stats["tokens"], data_tasks=stats["data_tasks"],
                      config=config.model_dump(), files=files, **meta_extra)
    result = StageResult("packing", Path(output), stats, metrics=numeric(stats["metrics"]),
                         headline={k: stats[k] for k in ("rows", "efficiency")},
                         summary="summary.md")
    result.write(tmp)
    (Path(tmp) / "summary.md").write_text(summary_markdown(stats, model))
    plot_lengths(stats, Path(tmp) / "lengths.png")
    log.info("packing: %d samples -> %d rows in %d batches, efficiency %.4f (%d skipped)",
             stats["samples_packed"], stats["rows"], stats["batches"], plan.efficiency,
             stats["skipped_total"])
    return result
