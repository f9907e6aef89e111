"""Packing over many pods with a shared volume: the row files are written in parallel.

The one-pod reduce (``longalign.packing.stage.pack_parts``) reads every part's sample store and
writes every row, so at scale one pod downloads 8 bytes per token and uploads the rows. Here the
sample stores and the rows stay on a volume every pod mounts (the pipelines' ReadWriteMany claim),
and the reduce is cut in three:

- plan (``plan_parts``, one pod): reads only the parts' per-sample numbers and, for the hash
  collisions, their ids; drops duplicate ids, plans the rows over all lengths and cuts the plan
  into row files at the micro-batch boundaries the one-pod writer uses (``cut_files``). Its
  output holds the plan (``plan.json`` and three ``.npy`` arrays) and, under ``packed/``, the
  final ``meta.json`` (with ``rows_dir``), stats, summary and plot.
- write (``write_file``, one pod per row file): reads the file's samples from the stores with
  positional reads and writes ``rows_dir/rows-NNNNN.arrow`` (under a temporary name, then
  renamed). A file's bytes depend only on its own micro-batches, so each equals the one-pod
  output's file of the same name.
- join (``join_files``, one pod): checks that every planned file is there with the rows and the
  size its writer reported, copies ``packed/`` into the output and deletes the sample stores.

The output is a packing output whose rows live in ``rows_dir`` (``longalign.formats.open_packed``
reads it): every pod that reads it must mount the volume at the same path. The map step
(``longalign.packing.parallel.encode_shard`` with ``store_dir``) puts its store on the volume.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from longalign.config import PackingConfig
from longalign.errors import UserError
from longalign.formats import PACKED
from longalign.io import atomic_dir, read_json, write_json
from longalign.models import load_tokenizer
from longalign.packing.parallel import make_encoder, read_parts
from longalign.packing.stage import finish, plan_store
from longalign.packing.store import RowFile, SampleStore, cut_files
from longalign.results import StageResult

log = logging.getLogger("longalign")
PLAN = "plan.json"
PACKED_DIR = "packed"  # inside the plan output: what the join publishes
WRITTEN = "written.json"
ARRAYS = ("samples", "rows", "batches")  # the plan's .npy files


def volume_dir(shared_dir: str | os.PathLike, kind: str, key: str) -> Path:
    """A directory of its own on the shared volume for ``key`` (an output artifact's URI, unique
    per task of a run and the same for a retry of it): ``shared_dir/kind/<hash of key>``."""
    if not str(shared_dir):
        raise UserError("shared_dir is empty: the sharded packing steps need a directory every "
                        "pod of the run mounts (the shared volume)")
    return Path(shared_dir) / kind / hashlib.sha256(key.encode()).hexdigest()[:20]


def plan_parts(config: PackingConfig, model: str, parts: list[str | os.PathLike],
               output: str | os.PathLike, rows_dir: str | os.PathLike, *,
               shared_dir: str | os.PathLike | None = None,
               overwrite: bool = False) -> tuple[StageResult, list[int]]:
    """The plan step: join the parts' per-sample numbers (stores on the shared volume or inside
    the parts), drop duplicate ids, plan the rows and cut them into row files to be written into
    ``rows_dir``; returns the result (the packing stats) and the file indices, one writer each.
    With ``shared_dir`` (in pods, where only the volume is shared) every store must be below it."""
    tally, stems = read_parts(parts)
    if shared_dir is not None:
        root = Path(shared_dir).absolute()
        outside = [str(s) for s in stems if not Path(s).absolute().is_relative_to(root)]
        if outside:
            raise UserError(f"{len(outside)} packing part(s) kept their sample store in their own "
                            f"output ({outside[0]}), where the writer pods cannot read it: run "
                            f"packing_part with shared_dir={shared_dir}")
    tokenizer = load_tokenizer(model)
    encoder = make_encoder(config, tokenizer)
    store = SampleStore.join(stems, owned=False)
    rows_dir = Path(rows_dir).absolute()
    with atomic_dir(output, overwrite=overwrite) as tmp:
        try:
            plan = plan_store(config, store, tally, f"{len(parts)} packing parts")
        finally:
            store.release()  # owned=False: closes the files, deletes nothing
        cuts = cut_files(store.lengths, plan.batches, config.tokens_per_file)
        names = [PACKED.shard_name(k) for k in range(len(cuts))]
        batches = plan.batches
        row_sizes = [len(row) for b in batches for row in b]
        arrays = {
            "samples": np.fromiter((i for b in batches for row in b for i in row), np.int64),
            "rows": np.concatenate([[0], np.cumsum(row_sizes, dtype=np.int64)]).astype(np.int64),
            "batches": np.concatenate([[0], np.cumsum([len(b) for b in batches],
                                                      dtype=np.int64)]).astype(np.int64),
        }
        for name in ARRAYS:
            np.save(Path(tmp) / f"{name}.npy", arrays[name], allow_pickle=False)
        files = [{"name": n, "batches": [s, e],
                  "rows": int(arrays["batches"][e] - arrays["batches"][s]), "tokens": t}
                 for n, (s, e, t) in zip(names, cuts)]
        stores = [Path(s).absolute() for s in stems]
        inside = {Path(p).absolute() for p in parts}  # stores kept in the parts' own outputs
        write_json(Path(tmp) / PLAN, {"stores": [str(s) for s in stores],
                                      "volume_stores": [str(s) for s in stores
                                                        if s.parent not in inside],
                                      "rows_dir": str(rows_dir), "files": files,
                                      "tokens_per_file": config.tokens_per_file})
        (Path(tmp) / PACKED_DIR).mkdir()
        result = finish(config, model, tokenizer, encoder, plan, tally, names,
                        Path(output) / PACKED_DIR, Path(tmp) / PACKED_DIR, rows_dir=str(rows_dir))
    log.info("packing plan: %d row files to write into %s", len(names), rows_dir)
    return result, list(range(len(names)))


def _read_plan(plan_dir: str | os.PathLike) -> dict:
    try:
        return read_json(Path(plan_dir) / PLAN)
    except (OSError, ValueError) as exc:
        raise UserError(f"{plan_dir} is not a packing plan (no readable {PLAN}: {exc})") from None


def write_file(plan_dir: str | os.PathLike, index: int, output: str | os.PathLike, *,
               overwrite: bool = False) -> StageResult:
    """The write step: row file ``index`` of the plan, into the plan's ``rows_dir`` (under a
    temporary name, renamed when complete; an earlier attempt's file is replaced). ``output``
    receives ``written.json`` (the file's name, rows, tokens and size) for the join."""
    plan = _read_plan(plan_dir)
    if not 0 <= index < len(plan["files"]):
        raise UserError(f"row file {index}: the plan has {len(plan['files'])} (0.."
                        f"{len(plan['files']) - 1})")
    entry = plan["files"][index]
    samples, rows, batches = (np.load(Path(plan_dir) / f"{n}.npy", mmap_mode="r",
                                      allow_pickle=False) for n in ARRAYS)
    rows_dir = Path(plan["rows_dir"])
    try:
        rows_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the rows directory {rows_dir}: {exc}") from None
    target = rows_dir / entry["name"]
    tmp = rows_dir / f".{entry['name']}.tmp-{os.getpid()}"
    store = SampleStore.join(plan["stores"], owned=False)
    try:
        writer = RowFile(tmp, store)
        first, stop = entry["batches"]
        for b in range(first, stop):
            batch = [samples[rows[r]:rows[r + 1]].tolist()
                     for r in range(int(batches[b]), int(batches[b + 1]))]
            writer.add(b, batch)
        writer.close()
        if (writer.rows, writer.tokens) != (entry["rows"], entry["tokens"]):
            raise RuntimeError(f"{entry['name']}: wrote {writer.rows} rows and {writer.tokens} "
                               f"tokens, the plan says {entry['rows']} and {entry['tokens']}")
        os.replace(tmp, target)
    finally:
        store.release()
        tmp.unlink(missing_ok=True)
    written = {"file": index, "name": entry["name"], "rows": writer.rows, "tokens": writer.tokens,
               "bytes": target.stat().st_size}
    with atomic_dir(output, overwrite=overwrite) as out:
        write_json(Path(out) / WRITTEN, written)
    log.info("packing: wrote %s (%d rows, %d tokens)", target, writer.rows, writer.tokens)
    return StageResult("packing write", Path(output), written,
                       metrics={"rows": writer.rows, "tokens": writer.tokens})


def join_files(plan_dir: str | os.PathLike, written: list[str | os.PathLike],
               output: str | os.PathLike, *, overwrite: bool = False,
               keep_stores: bool = False) -> StageResult:
    """The join step: check that the writers wrote every planned file (each reported once, with
    the planned rows, and still of the size reported), publish the packing output (``meta.json``
    pointing at the rows) in ``output`` and delete the sample stores (unless ``keep_stores``)."""
    plan = _read_plan(plan_dir)
    reports: dict[int, dict] = {}
    for w in written:
        try:
            report = read_json(Path(w) / WRITTEN)
        except (OSError, ValueError) as exc:
            raise UserError(f"{w} is not a packing write output (no readable {WRITTEN}: "
                            f"{exc})") from None
        if report["file"] in reports:
            raise UserError(f"row file {report['name']} was reported by two writers")
        reports[report["file"]] = report
    rows_dir = Path(plan["rows_dir"])
    problems = []
    for k, entry in enumerate(plan["files"]):
        report = reports.get(k)
        path = rows_dir / entry["name"]
        if report is None:
            problems.append(f"{entry['name']}: no writer reported it")
        elif (report["rows"], report["tokens"]) != (entry["rows"], entry["tokens"]):
            problems.append(f"{entry['name']}: {report['rows']} rows written, "
                            f"{entry['rows']} planned")
        elif not path.is_file() or path.stat().st_size != report["bytes"]:
            problems.append(f"{entry['name']}: missing from {rows_dir} or not the size its "
                            "writer reported (written over since?)")
    extra = sorted(set(reports) - set(range(len(plan["files"]))))
    if extra:
        problems.append(f"reports of row files the plan does not have: {extra}")
    if problems:
        raise UserError("the sharded packing rows are incomplete: " + "; ".join(problems))
    with atomic_dir(output, overwrite=overwrite) as tmp:
        shutil.copytree(Path(plan_dir) / PACKED_DIR, tmp, dirs_exist_ok=True)
    if not keep_stores:  # the stores the map steps put on the volume (not those in their outputs)
        for stem in map(Path, plan["volume_stores"]):
            if stem.with_name(stem.name + ".index.npy").exists():
                SampleStore.join([stem]).release()  # owned: deletes the part's files
            try:
                stem.parent.rmdir()
            except OSError:
                pass  # not empty (someone else's files) or gone already
    result = StageResult.load(output)
    log.info("packing: %d row files in %s", len(plan["files"]), rows_dir)
    return result
