"""Small I/O helpers shared by every stage.

Every stage writes its output directory atomically: it works in a hidden temporary sibling and
renames it into place only when it finished, so an interrupted run never leaves a half-written
output behind (and a re-run starts clean).
"""

from __future__ import annotations

import json
import os
import re
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


TMP_MARK = ".tmp-"  # hidden temporary siblings: ".<name>.tmp-<pid>-<random>"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove ``path``'s hidden temporary siblings left by killed runs: only names of our own pattern
    (``.<name>.tmp-<pid>-...`` and ``.<name>.old-<pid>``) whose process is no longer alive."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)(?:-.*)?$")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if not match or not sibling.is_dir() or sibling.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(sibling, ignore_errors=True)
        removed.append(sibling)
    return removed


def _output_error(path: Path, exc: OSError) -> UserError:
    target = exc.filename or path
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return UserError(f"cannot create output {path}: {target} is not a directory")
    return UserError(f"cannot write output {path}: {exc.strerror or exc} ({target})")


def publish_permissions(directory: Path) -> None:
    """Give every file and folder under ``directory`` the mode the umask allows (files 0644 and
    folders 0755 under the usual umask 022), whatever the writer used (some write weights 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~umask)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o666 & ~umask)
    os.chmod(directory, 0o777 & ~umask)


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block finishes without error.

    ``path`` may already exist as an empty directory (KFP sometimes creates artifact folders).
    A non-empty ``path`` is an error unless ``overwrite`` is set; the old content is then removed
    only after the new one is complete. The temporary sibling carries this process's id, so a
    later run removes what a killed run left behind (:func:`remove_stale_temps`). Every file of
    the output gets the same permissions (:func:`publish_permissions`). Problems with the location
    itself (a parent that is a file, no write permission) are UserErrors naming the path.
    """
    path = Path(path)
    try:
        check_output(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}{os.getpid()}-", dir=path.parent))
        _UNFINISHED.add(tmp)
        yield tmp
        publish_permissions(tmp)
    except OSError as exc:
        _discard(tmp)
        if tmp is None:
            raise _output_error(path, exc) from None
        raise
    except BaseException:
        _discard(tmp)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    _UNFINISHED.discard(tmp)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_UNFINISHED: set[Path] = set()  # temporary folders of this process not yet renamed into place


def _discard(tmp: Path | None) -> None:
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        _UNFINISHED.discard(tmp)


def remove_unfinished() -> None:
    """Remove this process's unfinished temporary folders (the CLI calls it on Ctrl-C, in case the
    signal arrived between creating a folder and the block that would remove it)."""
    for tmp in list(_UNFINISHED):
        _discard(tmp)


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
