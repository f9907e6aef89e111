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

from longalign.errors import UserError


def check_output(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Fail early if ``path`` cannot become a stage output: it is not a directory, or it is a
    non-empty one and ``overwrite`` is not set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise UserError(f"output {path} already exists and is not empty (use --overwrite)")


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block finishes without error.

    ``path`` may already exist as an empty directory (KFP sometimes creates artifact folders).
    A non-empty ``path`` is an error unless ``overwrite`` is set; the old content is then removed
    only after the new one is complete.
    """
    path = Path(path)
    check_output(path, overwrite)
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


def markdown_table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table (KFP renders Markdown artifacts)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
