"""Data fingerprints: a cheap digest of what the sources hold now, without reading their texts.

The pipeline computes it in an uncached task in front of sourcing and passes it to the (cached)
sourcing task as a parameter, so that sourcing, and everything after it, is re-run exactly when
the data changed. Per scheme:

- ``dir:`` (and a local ``hf:`` folder, and a ``git:`` path that is not the top of a git work
  tree): the files the reader would list (same include/exclude and skip rules), each with its size
  and modification time, or with the SHA-256 of its content when ``fingerprint = "content"``;
- ``git:``: the HEAD commit of each repository plus the tracked files modified in the work tree
  (the reader reads the work tree); include/exclude and size caps are part of the spec, which is
  part of the fingerprint;
- ``jsonl:`` / ``parquet:``: the SHA-256 of every file's content;
- ``hf:`` hub datasets: the dataset's current revision (commit sha) from the hub; offline, the
  revision of the local hub cache, else none: then only the spec counts and a note says so;
- ``stdlib:``: the Python version and the standard library's path.

The result holds no timestamps of its own, so unchanged data gives an identical fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterable, Literal

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.results import StageResult
from longalign.sourcing.base import selected
from longalign.sourcing.read_files import _directory, _git, list_tree, walk_files
from longalign.sourcing.read_tables import _files
from longalign.sourcing.specs import SourceSpec, parse_spec

log = logging.getLogger("longalign")

Mode = Literal["stat", "content"]
HUB_TIMEOUT_SECONDS = 20.0
UNRESOLVED = ("revision not resolved (offline or hub unreachable, and not in the local hub cache): "
              "the fingerprint covers the spec only, so a new revision is not picked up until it "
              "can be resolved")


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _files_entry(root: Path, rels: Iterable[str], mode: Mode) -> dict[str, Any]:
    """Digest of a list of files under ``root``: per file its path and size plus its mtime
    (``stat``) or content hash (``content``)."""
    h = hashlib.sha256()
    count = total = 0
    for rel in rels:
        try:
            st = (root / rel).stat()
            mark = file_digest(root / rel) if mode == "content" else str(st.st_mtime_ns)
        except OSError as exc:  # the reader reports it as unreadable; here it still counts
            mark, st = f"unreadable:{exc.errno}", None
        size = st.st_size if st is not None else -1
        h.update(f"{rel}\0{size}\0{mark}\n".encode("utf-8", "surrogateescape"))
        count += 1
        total += max(size, 0)
    return {"files": count, "bytes": total, "digest": h.hexdigest()}


def _tree(root: Path, source: SourceSpec, mode: Mode) -> dict[str, Any]:
    files, _ = walk_files(root, {"__pycache__"})
    include, exclude = source.patterns("include"), source.patterns("exclude")
    rels = [f.as_posix() for f in files if selected(f.as_posix(), include, exclude)]
    return {"kind": "files", "mode": mode, **_files_entry(root, rels, mode)}


def _repository(root: Path, source: SourceSpec, mode: Mode) -> dict[str, Any]:
    files, commit, _ = list_tree(root)
    include, exclude = source.patterns("include"), source.patterns("exclude")
    files = [f for f in files if selected(f, include, exclude)]
    if commit is None:  # a plain source tree: like dir:
        return {"kind": "files", "mode": mode, **_files_entry(root, files, mode)}
    status = _git(root, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=no")
    listed = set(files)
    changed = sorted({os.fsdecode(entry[3:]) for entry in (status or b"").split(b"\0") if len(entry) > 3}
                     & listed)
    entry: dict[str, Any] = {"kind": "git", "commit": commit, "files": len(files)}
    if changed:  # uncommitted edits of tracked files are read too
        modified = _files_entry(root, changed, "content")
        entry["modified"] = {"files": modified["files"], "digest": modified["digest"]}
    entry["digest"] = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    return entry


def _git_source(source: SourceSpec, mode: Mode) -> dict[str, Any]:
    root = _directory(source.spec, source.target)
    if not source.get("each", False):
        return _repository(root, source, mode)
    roots = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=lambda p: p.name)
    parts = {p.name: _repository(p, source, mode) for p in roots}
    digest = hashlib.sha256(json.dumps({k: v["digest"] for k, v in parts.items()},
                                       sort_keys=True).encode()).hexdigest()
    return {"kind": "git", "repositories": {k: v.get("commit") for k, v in parts.items()},
            "digest": digest}


def _table_files(source: SourceSpec, suffixes: tuple[str, ...]) -> dict[str, Any]:
    path = Path(source.target).expanduser()
    if not path.exists():
        raise UserError(f"source {source.spec!r}: path not found: {path}")
    found, _ = _files(path, suffixes)
    root = path if path.is_dir() else path.parent
    rels = [p.relative_to(root).as_posix() for p in found]
    return {"kind": "files", "mode": "content", **_files_entry(root, rels, "content")}


def _hub_revision(name: str) -> tuple[str | None, str]:
    """(revision, where it came from) of a hub dataset: the hub, else the local hub cache."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(name, timeout=HUB_TIMEOUT_SECONDS).sha, "hub"
        except Exception as exc:  # offline, unknown, gated: fall back to what is cached here
            log.warning("fingerprint: cannot ask the hub for %s's revision (%s)", name, type(exc).__name__)
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None, "local hub cache"
    except OSError:
        return None, "unresolved"


def _hf_source(source: SourceSpec, mode: Mode) -> dict[str, Any]:
    target = source.target
    local = Path(target).expanduser()
    if not local.exists():
        name = target.split(":")[0]
        local = Path(name).expanduser()
    if local.is_dir():
        return _tree(local, source, mode)
    name = target.split(":")[0]
    revision, origin = _hub_revision(name)
    entry: dict[str, Any] = {"kind": "hf", "dataset": name, "revision": revision, "revision_from": origin}
    if revision is None:
        entry["note"] = UNRESOLVED
        log.warning("fingerprint: %s: %s", source.spec, UNRESOLVED)
    entry["digest"] = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    return entry


def _stdlib_source(source: SourceSpec) -> dict[str, Any]:
    root = Path(source.target or sysconfig.get_paths()["stdlib"]).expanduser()
    if not root.is_dir():
        raise UserError(f"source {source.spec!r}: standard library folder not found: {root}")
    entry = {"kind": "stdlib", "python": sys.version.split()[0], "path": str(root.resolve())}
    entry["digest"] = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    return entry


def source_fingerprint(spec: str, mode: Mode = "stat") -> dict[str, Any]:
    """One source's fingerprint entry: its ``spec``, ``kind``, ``digest`` and a few facts (file
    count and bytes, commit, revision). A bad spec or missing path is a UserError."""
    source = parse_spec(spec)
    if source.scheme == "dir":
        entry = _tree(_directory(spec, source.target), source, mode)
    elif source.scheme == "git":
        entry = _git_source(source, mode)
    elif source.scheme == "jsonl":
        entry = _table_files(source, (".jsonl", ".jsonl.gz"))
    elif source.scheme == "parquet":
        entry = _table_files(source, (".parquet",))
    elif source.scheme == "hf":
        entry = _hf_source(source, mode)
    else:
        entry = _stdlib_source(source)
    return {"spec": spec, **entry}


def fingerprint(config: SourcingConfig) -> dict[str, Any]:
    """The data fingerprint of a sourcing config: ``digest`` (SHA-256 over every source's digest,
    in config order), ``mode`` and per-source entries (``sources``)."""
    entries = [source_fingerprint(spec, config.fingerprint) for spec in dict.fromkeys(config.sources)]
    digest = hashlib.sha256(json.dumps([[e["spec"], e["digest"]] for e in entries]).encode()).hexdigest()
    fp = {"digest": digest, "mode": config.fingerprint, "sources": entries}
    log.info("%s", describe(fp))
    return fp


def metrics(fp: dict[str, Any]) -> dict[str, int]:
    """Numbers for KFP Metrics: sources, files and bytes fingerprinted, unresolved revisions."""
    entries = fp.get("sources", [])
    return {"sources": len(entries), "files": sum(int(e.get("files", 0)) for e in entries),
            "bytes": sum(int(e.get("bytes", 0)) for e in entries),
            "unresolved": sum(1 for e in entries if e.get("note"))}


def fingerprint_result(config: SourcingConfig, folder: str | os.PathLike) -> StageResult:
    """The pipeline step: the fingerprint as a StageResult (stats = the fingerprint, its metrics,
    and ``summary.md`` written into ``folder``)."""
    fp = fingerprint(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.md").write_text(markdown(fp))
    numbers = metrics(fp)
    return StageResult("fingerprint", folder, fp, metrics=numbers,
                       headline={k: numbers[k] for k in ("files", "bytes")}, summary="summary.md")


def describe(fp: dict[str, Any]) -> str:
    """A one-line description per source, for logs and summaries."""
    lines = [f"data fingerprint {fp.get('digest', '?')[:16]} ({fp.get('mode', '?')})"]
    for e in fp.get("sources", []):
        facts = [f"{k} {e[k]}" for k in ("files", "bytes", "commit", "revision", "python") if e.get(k) is not None]
        if e.get("modified"):
            facts.append(f"{e['modified']['files']} modified file(s)")
        lines.append(f"- {e['spec']}: {e['kind']}, {', '.join(facts) or 'no facts'}; digest {e['digest'][:16]}"
                     + (f" ({e['note']})" if e.get("note") else ""))
    return "\n".join(lines)


def markdown(fp: dict[str, Any]) -> str:
    """The fingerprint step's summary page."""
    rows = ["| source | kind | facts | digest |", "|---|---|---|---|"]
    for e in fp.get("sources", []):
        facts = ", ".join(f"{k}: {e[k]}" for k in ("files", "bytes", "commit", "revision", "python")
                          if e.get(k) is not None)
        if e.get("note"):
            facts += f" ({e['note']})"
        rows.append(f"| `{e['spec']}` | {e['kind']} | {facts} | `{e['digest'][:16]}` |")
    return (f"# Data fingerprint\n\n`{fp['digest']}` (files compared by "
            f"{'content' if fp['mode'] == 'content' else 'size and modification time'}; "
            "jsonl/parquet always by content)\n\n" + "\n".join(rows) + "\n")
