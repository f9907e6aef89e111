"""Small I/O helpers shared by every stage.

Every stage writes its output directory atomically: it works in a hidden temporary sibling and
renames it into place only when it finished, so an interrupted run never leaves a half-written
output behind (and a re-run starts clean).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from longalign.errors import UserError


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block finishes without error.

    ``path`` may already exist as an empty directory (KFP sometimes creates artifact folders).
    A non-empty ``path`` is an error unless ``overwrite`` is set; the old content is then removed
    only after the new one is complete.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"output {path} exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise UserError(f"output {path} already exists and is not empty (use --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; artifacts may be read by another user
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON: {path} ({exc})") from None


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as a Path if it is an existing directory, else raise a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_dir():
        raise UserError(f"{what} is not a directory: {path}")
    return path


def shard_paths(directory: str | os.PathLike, pattern: str, what: str) -> list[Path]:
    """The sorted shard files of a stage output, or a UserError if there are none."""
    directory = require_dir(directory, what)
    paths = sorted(directory.glob(pattern))
    if not paths:
        raise UserError(f"{what} {directory} holds no {pattern} files: is it the right stage output?")
    return paths


def read_parquet_dir(directory: str | os.PathLike, what: str, prefix: str) -> pa.Table:
    """Read all ``{prefix}-*.parquet`` shards of a stage output as one table."""
    paths = shard_paths(directory, f"{prefix}-*.parquet", what)
    try:
        return pa.concat_tables([pq.read_table(p) for p in paths])
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {what} {directory}: {exc}") from None


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    pq.write_table(table, str(path), compression="zstd")


def markdown_table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table (KFP renders Markdown artifacts)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
