"""Readers: turn a source spec into raw records.

A source spec is URI-like: ``scheme:rest``.

- ``stdlib:`` (or ``stdlib:PATH`` for another Python's ``lib/pythonX.Y``): Python's own standard
  library, one document per top-level package (its ``.py`` files concatenated in sorted path order,
  each behind a ``# ===== file: email/parser.py =====`` header line, the way ProLong turns a code
  repository into one long document) and one document per top-level module file.
- ``dir:PATH``: every regular file under PATH, recursively, in sorted path order (hidden files and
  ``__pycache__`` skipped); binary files are rejected later by content, not by name.
- ``jsonl:PATH`` or ``jsonl:PATH#field``: one JSON object per line (PATH may be a ``.jsonl`` file or
  a directory of them); the text is in ``field`` (default ``text``), other keys become metadata.

Every reader has the same interface: ``index()`` lists its candidates cheaply (and returns the
errors met while listing), ``len(reader)`` is the number of candidates, and ``read(i)`` yields the
``Record``s and ``Rejection``s of candidate ``i``. Candidates are addressed by integer so that the
stage can visit them in a seeded shuffled order without holding any text in memory.
"""

from __future__ import annotations

import json
import os
import sysconfig
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

from longalign.errors import UserError

MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are rejected unread ("too_large")
SNIFF_BYTES = 8192  # a NUL byte in the first bytes marks a binary file before it is read whole

# Directory names that hold tests or test data, build leftovers or third-party code.
STDLIB_SKIP_TOP = {"test", "tests", "site-packages", "dist-packages", "lib-dynload", "__pycache__"}
STDLIB_SKIP_ANY = {"test", "tests", "idle_test", "__pycache__"}

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".java": "java", ".js": "javascript", ".ts": "typescript", ".go": "go",
    ".rs": "rust", ".rb": "ruby", ".sh": "shell", ".md": "markdown", ".rst": "restructuredtext",
    ".tex": "latex", ".html": "html", ".css": "css", ".sql": "sql", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json",
}


@dataclass(frozen=True)
class Record:
    """One raw document: ``data`` is text, or bytes still to be decoded as UTF-8."""

    uri: str
    data: Union[str, bytes]
    metadata: dict[str, Any] = field(default_factory=dict)
    language: str | None = None


@dataclass(frozen=True)
class Rejection:
    """Something a reader could not turn into a document, with its reason and where it was."""

    uri: str
    reason: str
    detail: str = ""


Item = Union[Record, Rejection]


def language_of(path: str | os.PathLike) -> str | None:
    return LANGUAGES.get(Path(path).suffix.lower())


def _read_bytes(path: Path, uri: str) -> Union[bytes, Rejection]:
    """Read a file whole unless it is too large or sniffs as binary (both rejected unread)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Rejection(uri, "too_large", f"{size} bytes > {MAX_FILE_BYTES}")
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if b"\x00" in head:
                return Rejection(uri, "binary", "NUL byte in the first bytes")
            return head + handle.read()
    except OSError as exc:
        return Rejection(uri, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")


def _walk_files(root: Path, skip_dirs: set[str]) -> tuple[list[Path], list[Rejection]]:
    """All regular files under ``root`` (sorted, relative), skipping hidden entries and ``skip_dirs``."""
    files: list[Path] = []
    errors: list[Rejection] = []

    def onerror(exc: OSError) -> None:
        errors.append(Rejection(str(exc.filename), "unreadable", exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip_dirs]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                files.append(full.relative_to(root))
    files.sort(key=lambda p: p.as_posix())
    return files, errors


class StdlibReader:
    """Python's standard library: one document per top-level package or module."""

    def __init__(self, spec: str, root: str | None = None) -> None:
        self.spec = spec
        self.root = Path(root or sysconfig.get_paths()["stdlib"])
        if not self.root.is_dir():
            raise UserError(f"source {spec!r}: standard library folder not found: {self.root}")
        self.groups: list[tuple[str, list[Path]]] = []

    def index(self) -> list[Rejection]:
        errors: list[Rejection] = []
        try:
            entries = sorted(self.root.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise UserError(f"source {self.spec!r}: cannot list {self.root}: {exc}") from None
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in STDLIB_SKIP_TOP or name.startswith("config-"):
                continue
            if entry.is_dir():
                files, errs = _walk_files(entry, STDLIB_SKIP_ANY)
                errors.extend(errs)
                py = [Path(name) / f for f in files if f.suffix == ".py"]
                if py:
                    self.groups.append((name, py))
            elif entry.suffix == ".py" and entry.is_file():
                self.groups.append((entry.stem, [Path(name)]))
        return errors

    def __len__(self) -> int:
        return len(self.groups)

    def read(self, i: int) -> Iterator[Item]:
        name, files = self.groups[i]
        parts, used = [], []
        for rel in files:
            uri = rel.as_posix()
            data = _read_bytes(self.root / rel, uri)
            if isinstance(data, Rejection):
                yield data
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Rejection(uri, "undecodable", f"{exc.reason} at byte {exc.start}")
                continue
            parts.append(f"# ===== file: {uri} =====\n{text.strip(chr(10))}\n")
            used.append(uri)
        if parts:
            meta = {"package": name, "files": used, "python": sysconfig.get_python_version()}
            yield Record(name, "\n\n".join(parts), meta, "python")


class DirReader:
    """Every regular file under a directory, recursively, in sorted path order."""

    def __init__(self, spec: str, path: str) -> None:
        self.spec = spec
        self.root = Path(path).expanduser()
        if not self.root.exists():
            raise UserError(f"source {spec!r}: path not found: {self.root}")
        if not self.root.is_dir():
            raise UserError(f"source {spec!r}: not a directory: {self.root}")
        self.files: list[Path] = []

    def index(self) -> list[Rejection]:
        self.files, errors = _walk_files(self.root, {"__pycache__"})
        return errors

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> Iterator[Item]:
        rel = self.files[i]
        uri = str(self.root / rel)
        data = _read_bytes(self.root / rel, uri)
        if isinstance(data, Rejection):
            yield data
            return
        yield Record(uri, data, {"path": rel.as_posix(), "bytes": len(data)}, language_of(rel))


class JsonlReader:
    """One JSON object per line; candidates are lines, indexed by byte offset."""

    def __init__(self, spec: str, path: str, text_field: str = "text") -> None:
        self.spec = spec
        self.path = Path(path).expanduser()
        self.field = text_field
        if not self.path.exists():
            raise UserError(f"source {spec!r}: path not found: {self.path}")
        self.files: list[Path] = []
        self.file_of = array("l")  # candidate -> index into self.files
        self.offsets = array("q")  # candidate -> byte offset of its line
        self.lines = array("l")  # candidate -> 1-based line number

    def index(self) -> list[Rejection]:
        errors: list[Rejection] = []
        if self.path.is_dir():
            found, errors = _walk_files(self.path, {"__pycache__"})
            self.files = [self.path / f for f in found if f.suffix == ".jsonl"]
        else:
            self.files = [self.path]
        for n, path in enumerate(self.files):
            try:
                with open(path, "rb") as handle:
                    offset = 0
                    for lineno, line in enumerate(handle, start=1):
                        if line.strip():
                            self.file_of.append(n)
                            self.offsets.append(offset)
                            self.lines.append(lineno)
                        offset += len(line)
            except OSError as exc:
                errors.append(Rejection(str(path), "unreadable", exc.strerror or str(exc)))
        return errors

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, i: int) -> Iterator[Item]:
        path = self.files[self.file_of[i]]
        uri = f"{path}:{self.lines[i]}"
        try:
            with open(path, "rb") as handle:
                handle.seek(self.offsets[i])
                raw = handle.readline()
        except OSError as exc:
            yield Rejection(uri, "unreadable", exc.strerror or str(exc))
            return
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield Rejection(uri, "undecodable", f"{exc.reason} at byte {exc.start}")
            return
        except json.JSONDecodeError as exc:
            yield Rejection(uri, "malformed", f"not JSON: {exc.msg} (column {exc.colno})")
            return
        if not isinstance(obj, dict):
            yield Rejection(uri, "malformed", f"a line must hold a JSON object, got {type(obj).__name__}")
            return
        if self.field not in obj or obj[self.field] is None:
            yield Rejection(uri, "missing_field", f"no {self.field!r} field")
            return
        text = obj[self.field]
        if not isinstance(text, str):
            yield Rejection(uri, "malformed", f"field {self.field!r} is {type(text).__name__}, not a string")
            return
        meta = {k: v for k, v in obj.items() if k != self.field}
        language = meta.get("language") if isinstance(meta.get("language"), str) else None
        yield Record(uri, text, meta, language)


SCHEMES = ("stdlib", "dir", "jsonl")
Reader = Union[StdlibReader, DirReader, JsonlReader]


def open_reader(spec: str) -> Reader:
    """Build the reader for one source spec; an unknown scheme or a missing path is a UserError."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SCHEMES:
        raise UserError(
            f"unknown source {spec!r}: use one of stdlib:, dir:PATH, jsonl:PATH[#field]"
        )
    if scheme == "stdlib":
        return StdlibReader(spec, rest or None)
    if not rest:
        raise UserError(f"source {spec!r} needs a path, e.g. {scheme}:/data/texts")
    if scheme == "dir":
        return DirReader(spec, rest)
    path, text_field = rest, "text"
    if "#" in rest and not Path(rest).expanduser().exists():
        path, _, text_field = rest.rpartition("#")
        if not text_field:
            raise UserError(f"source {spec!r}: empty field name after '#'")
    return JsonlReader(spec, path, text_field)
