"""Packing's map step: tokenise the input in parts, in this process or in N worker processes.

The packing stage is a map over parts of its input followed by a reduce. The map tokenises one
contiguous range of input rows (``Shards.iter_range``) into a ``SampleStore`` part and counts its
skips in a ``Tally``; the reduce (``longalign.packing.stage``) joins the parts in input order
(``SampleStore.join``), drops duplicate ids over all of them, plans the rows over all lengths
and writes them. Since a sample's tokens do not depend on which other samples share its
tokenizer call, and the parts are joined in input order, the joined store holds the same samples
in the same order as one pass over the whole input, so the rows are identical for any number of
workers.

This process encodes the first part itself; the other parts go to ``workers - 1`` processes,
spawned (not forked: the tokenizer's Rust thread pool does not survive a fork), each loading the
tokenizer itself (a fixed start-up cost of a few seconds per worker). Each worker's tokenizer thread pool gets ``cores // workers``
threads (``RAYON_NUM_THREADS``, unless the environment sets it) so the workers do not
oversubscribe the cores. Parts travel between processes as files in the output's temporary
directory plus a JSON-able tally; nothing is pickled but the call arguments.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import CHATS, CORPUS, Shards
from longalign.io import atomic_dir, read_json, write_json
from longalign.packing.encode import ChatEncoder, Encoded
from longalign.packing.report import Tally
from longalign.packing.store import SampleStore
from longalign.packing.text import TextEncoder, text_records
from longalign.progress import track
from longalign.results import StageResult

log = logging.getLogger("longalign")
READ_BATCH = 256  # chats read from a Parquet shard at a time


def make_encoder(config: PackingConfig, tokenizer: Any) -> ChatEncoder | TextEncoder:
    """The encoder of ``config.format`` (chats through the template, or plain text)."""
    if config.format == "text":
        return TextEncoder(tokenizer, config.max_len, split_long=config.split_long,
                           truncation=config.truncation)
    return ChatEncoder(tokenizer, config.max_len, config.truncation, config.label_turns,
                       config.chat_template)


def chat_records(chats: Shards, tally: Tally,
                 rows: tuple[int, int] | None = None) -> Iterator[tuple[str, object]]:
    """(id, messages) of every chat (of input rows ``rows[0]`` to ``rows[1] - 1`` if given),
    streamed; rows without an id are counted and skipped."""
    n = rows[0] if rows else 0
    columns = ["id", "messages"] + (["task"] if "task" in chats.columns else [])
    batches = (chats.iter_range(*rows, READ_BATCH, columns) if rows
               else chats.iter_batches(READ_BATCH, columns))
    for batch in batches:
        if "task" in columns:
            tally.tasks.update(str(t) for t in batch.column("task").to_pylist() if t)
        for sample_id, messages in zip(batch.column("id").to_pylist(),
                                       batch.column("messages").to_pylist()):
            tally.samples_in += 1
            sample_id = str(sample_id) if sample_id is not None else ""
            if sample_id:
                yield sample_id, messages
            else:
                tally.skip(f"row {n}", "malformed", "missing id")
            n += 1


def encode_into(files: Shards, encoder: ChatEncoder | TextEncoder, store: SampleStore,
                tally: Tally, rows: tuple[int, int] | None = None, *, progress: bool = True) -> None:
    """Tokenise the input (or its rows ``rows``) into ``store``, counting skips in ``tally``."""
    text = isinstance(encoder, TextEncoder)
    records = (text_records if text else chat_records)(files, tally, rows)
    results = encoder.encode_stream(records)
    if progress:
        results = track(results, "tokenising " + ("documents" if text else "chats"),
                        total=files.num_rows)
    for r in results:
        if isinstance(r, Encoded):
            tally.truncated += r.truncated
            store.append([r])
        else:
            tally.skip(r.id, r.reason, r.detail)


def split_rows(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges covering ``range(total)``, sizes differing by at most 1."""
    bounds = [total * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def input_shards(config: PackingConfig, source: str | os.PathLike) -> Shards:
    """The packing input: the corpus (format text) or the chats, checked to be non-empty."""
    text = config.format == "text"
    files = Shards(CORPUS if text else CHATS, source)
    if files.num_rows == 0:
        raise UserError(f"{files.format.name} {source} holds no "
                        + ("documents" if text else "samples"))
    return files


def encode_part(config: dict[str, Any], model: str, source: str, rows: tuple[int, int],
                stem: str, threads: int) -> dict[str, Any]:
    """Map step for one part (runs in a worker): tokenise input rows ``rows`` of ``source`` into
    the store part ``stem`` (``directory / name``); returns the part's tally (``Tally.as_dict``)
    and its sample count."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    from longalign.models import load_tokenizer

    cfg = PackingConfig(**config)
    files = input_shards(cfg, source)
    tally = Tally()
    stem_path = Path(stem)
    store = SampleStore(stem_path.parent, stem_path.name)
    try:
        encode_into(files, make_encoder(cfg, load_tokenizer(model)), store, tally, rows,
                    progress=False)
    finally:
        count = store.finish()
    return {"tally": tally.as_dict(), "samples": count}


def encode_parallel(config: PackingConfig, model: str, files: Shards, directory: str | os.PathLike,
                    workers: int, encoder: ChatEncoder | TextEncoder) -> tuple[SampleStore, Tally]:
    """The map over ``workers`` parts of ``files``: the first part in this process (with
    ``encoder``, while the workers start), the others in ``workers - 1`` spawned processes;
    returns the joined store (closed, samples in input order) and the merged tally."""
    ranges = split_rows(files.num_rows, workers)
    names = [f".samples-{k:05d}" for k in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    tally = Tally()
    with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
        futures = [pool.submit(encode_part, config.model_dump(), model, str(files.directory),
                               rows, str(Path(directory) / name), threads)
                   for rows, name in zip(ranges[1:], names[1:])]
        store = SampleStore(directory, names[0])
        try:
            encode_into(files, encoder, store, tally, ranges[0], progress=False)
        finally:
            count = store.finish()
        parts = [{"samples": count}] + [f.result() for f in futures]
        for k, part in enumerate(parts):
            if k:
                tally.merge(part["tally"])
            log.info("packing: part %d/%d (rows %d-%d) -> %d samples", k + 1, workers,
                     *ranges[k], part["samples"])
    return SampleStore.join([Path(directory) / name for name in names]), tally


PART = "part"  # the store part's name inside a map step's output
TALLY = "tally.json"


def encode_shard(config: PackingConfig, model: str, source: str | os.PathLike,
                 output: str | os.PathLike, index: int, count: int, *,
                 store_dir: str | os.PathLike | None = None, overwrite: bool = False) -> StageResult:
    """The map step as a stage of its own (one pod of a sharded run): tokenise part ``index`` of
    ``count`` (``split_rows`` of the input rows) into a sample-store part and write ``output``
    (``tally.json``, atomically); the result's stats are the tally plus ``rows`` and ``samples``.

    The store part (``part.bin``, ``part.ids.bin``, ``part.index.npy``) goes into ``output`` too,
    or, with ``store_dir``, into that directory (on a volume every pod of the run shares; written
    atomically, replacing an earlier attempt's) and ``tally.json`` records where (``store``).
    ``longalign.packing.stage.pack_parts`` and ``longalign.packing.spool.plan_parts`` are the
    reduces."""
    if not 0 <= index < count:
        raise UserError(f"part {index} of {count}: the index must be in 0..{count - 1}")
    from longalign.models import load_tokenizer

    files = input_shards(config, source)
    rows = split_rows(files.num_rows, count)[index]
    encoder = make_encoder(config, load_tokenizer(model))
    tally = Tally()
    with atomic_dir(output, overwrite=overwrite) as tmp:
        with (atomic_dir(store_dir, overwrite=True) if store_dir else nullcontext(tmp)) as where:
            store = SampleStore(where, PART)
            try:
                encode_into(files, encoder, store, tally, rows, progress=False)
            finally:
                samples = store.finish()
        summary = {**tally.as_dict(), "rows": list(rows), "samples": samples}
        if store_dir:
            summary["store"] = str(Path(store_dir).absolute() / PART)
        write_json(Path(tmp) / TALLY, summary)
    log.info("packing: part %d/%d (rows %d-%d) -> %d samples", index + 1, count, *rows, samples)
    return StageResult("packing part", Path(output), summary, metrics={
        "samples_in": summary["samples_in"], "samples": samples,
        "skipped": sum(summary["skipped"].values())})


def read_parts(parts: list[str | os.PathLike]) -> tuple[Tally, list[Path]]:
    """The map outputs ``parts`` (of ``encode_shard``, in any order: each records its input rows),
    checked to cover the input rows without gaps: their merged tally and their store parts'
    stems in input order (for ``SampleStore.join``)."""
    if not parts:
        raise UserError("packing: no parts to join")
    found = []
    for part in parts:
        try:
            summary = read_json(Path(part) / TALLY)
            found.append((tuple(summary["rows"]), summary, Path(part)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{part} is not a packing part (no readable {TALLY}: {exc})") from None
    found.sort(key=lambda t: t[0])  # input order, whatever order the parts came in
    ends = [0] + [rows[1] for rows, _, _ in found]
    if [rows[0] for rows, _, _ in found] != ends[:-1]:
        raise UserError("packing parts do not cover the input rows without gaps: "
                        + ", ".join(f"{a}-{b}" for (a, b), _, _ in found))
    tally = Tally()
    for _, summary, _ in found:
        tally.merge(summary)
    return tally, [Path(summary.get("store") or path / PART) for _, summary, path in found]

