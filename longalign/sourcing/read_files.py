"""Readers of local files: ``stdlib:``, ``dir:`` and ``git:``.

``stdlib:`` and ``git:`` turn a tree of files into one *repository document* the way ProLong does:
the files concatenated in sorted path order, each behind a ``# ===== file: PATH =====`` header
line. Files left out of such a document (binary, not UTF-8, too large, past the size cap) are
reported as part rejections; the document goes on without them.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

from longalign.errors import UserError
from longalign.sourcing.base import IndexedReader, Item, Record, Rejection, language_of, selected
from longalign.sourcing.files import MAX_FILE_BYTES, load_file, read_bytes
from longalign.sourcing.specs import SourceSpec

# Directory names that hold tests or test data, build leftovers or third-party code.
STDLIB_SKIP_TOP = {"test", "tests", "site-packages", "dist-packages", "lib-dynload", "__pycache__"}
STDLIB_SKIP_ANY = {"test", "tests", "idle_test", "__pycache__"}
GIT_MAX_FILE_BYTES = 1024 * 1024  # default cap of one file inside a repository document
GIT_MAX_DOC_BYTES = 64 * 1024 * 1024  # default cap of one repository document
FILE_HEADER = "# ===== file: {} ====="


def _link_problem(path: Path, follow_links: bool) -> Optional[tuple[str, str]]:
    """Why a link is not used (reason, detail), or None when it is followed."""
    if not follow_links:
        return "link_skipped", "a symbolic link (the source has follow_links=false)"
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "link_loop", "the link resolves to itself"
        return "broken_link", f"target {os.readlink(path)!r} not found"
    return None


def walk_files(root: Path, skip_dirs: set[str],
               follow_links: bool = True) -> tuple[list[Path], list[Rejection]]:
    """All regular files under ``root`` (sorted, relative), skipping hidden entries and ``skip_dirs``.

    Links to files and folders are followed unless ``follow_links`` is false (Hugging Face cache
    snapshots are made of links); each real folder is walked once, so link cycles end. Everything
    left out for another reason than being hidden or in ``skip_dirs`` is returned as a rejection
    with its reason (link_skipped, broken_link, link_loop, not_regular, unreadable).
    """
    files: list[Path] = []
    errors: list[Rejection] = []

    def onerror(exc: OSError) -> None:
        errors.append(Rejection(str(exc.filename), "unreadable", exc.strerror or str(exc)))

    def folder_key(path: Path) -> Optional[tuple[int, int]]:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    walked = {folder_key(root)}
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=follow_links):
        keep = []
        for name in sorted(dirnames):
            full = Path(dirpath) / name
            if name.startswith(".") or name in skip_dirs:
                continue
            if full.is_symlink():
                problem = _link_problem(full, follow_links)
                if problem:
                    errors.append(Rejection(str(full), *problem))
                    continue
            key = folder_key(full)
            if key in walked:
                errors.append(Rejection(str(full), "link_loop", "folder already walked through another path"))
                continue
            walked.add(key)
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_symlink():
                problem = _link_problem(full, follow_links)
                if problem:
                    errors.append(Rejection(str(full), *problem))
                    continue
            if full.is_file():
                files.append(full.relative_to(root))
            else:
                errors.append(Rejection(str(full), "not_regular", "not a regular file (device, pipe or socket)"))
    files.sort(key=lambda p: p.as_posix())
    return files, errors


def repo_document(root: Path, files: list[str], max_file_bytes: int, max_doc_bytes: int,
                  uri_prefix: str = "") -> tuple[Optional[str], list[str], Counter, list[Rejection]]:
    """Concatenate ``files`` (relative posix paths, already in order) into one document.

    Returns (text or None if no file was usable, the files used, bytes per language, the part
    rejections of the files left out).
    """
    parts: list[str] = []
    used: list[str] = []
    languages: Counter = Counter()
    skipped: list[Rejection] = []
    total = 0
    for n, rel in enumerate(files):
        uri = f"{uri_prefix}{rel}"
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(Rejection(uri, "undecodable", "file name is not UTF-8", part=True))
            continue
        data = read_bytes(root / rel, uri, limit=max_file_bytes)
        if isinstance(data, Rejection):
            skipped.append(Rejection(data.uri, data.reason, data.detail, part=True))
            continue
        if b"\x00" in data:
            skipped.append(Rejection(uri, "binary", "NUL byte", part=True))
            continue
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            skipped.append(Rejection(uri, "undecodable", f"{exc.reason} at byte {exc.start}", part=True))
            continue
        if total + len(data) > max_doc_bytes:
            rest = len(files) - n
            skipped.append(Rejection(uri, "size_cap", f"this and {rest - 1} later file(s) past "
                                     f"the document cap of {max_doc_bytes} bytes", part=True))
            break
        total += len(data)
        parts.append(f"{FILE_HEADER.format(rel)}\n{text.strip(chr(10))}\n")
        used.append(rel)
        lang = language_of(rel)
        if lang:
            languages[lang] += len(data)
    return ("\n\n".join(parts) if parts else None), used, languages, skipped


class StdlibReader(IndexedReader):
    """Python's standard library: one document per top-level package or module."""

    def __init__(self, spec: str, root: str | None = None, source: Optional[SourceSpec] = None) -> None:
        super().__init__(spec, source)
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
                files, errs = walk_files(entry, STDLIB_SKIP_ANY)
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
        text, used, _, skipped = repo_document(
            self.root, [f.as_posix() for f in files], MAX_FILE_BYTES, MAX_FILE_BYTES)
        yield from skipped
        if text is not None:
            meta = {"package": name, "files": used, "python": sysconfig.get_python_version()}
            yield Record(name, text, meta, "python")


def _directory(spec: str, path: str) -> Path:
    """The folder a ``dir:`` or ``git:`` spec names; a missing path or a file is a UserError."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"source {spec!r}: path not found: {root}")
    if not root.is_dir():
        raise UserError(f"source {spec!r}: not a directory: {root}")
    return root


class DirReader(IndexedReader):
    """Every regular file under a directory, recursively, in sorted path order."""

    def __init__(self, spec: str, path: str, source: Optional[SourceSpec] = None) -> None:
        super().__init__(spec, source)
        self.root = _directory(spec, path)
        self.files: list[Path] = []

    def index(self) -> list[Rejection]:
        files, errors = walk_files(self.root, {"__pycache__"}, self.source.get("follow_links", True))
        include, exclude = self.source.patterns("include"), self.source.patterns("exclude")
        self.files = [f for f in files if selected(f.as_posix(), include, exclude)]
        return errors

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> Iterator[Item]:
        rel = self.files[i]
        uri = str(self.root / rel)
        loaded = load_file(self.root / rel, uri)
        if isinstance(loaded, Rejection):
            yield loaded
            return
        data, meta, language = loaded
        yield Record(uri, data, {"path": rel.as_posix(), **meta}, language)


def _git(root: Path, *args: str) -> Optional[bytes]:
    try:
        done = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(root), *args],
                              capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def list_tree(root: Path, follow_links: bool = True) -> tuple[list[str], Optional[str], list[Rejection]]:
    """Files of a source tree (sorted posix paths) and its commit: ``git ls-files`` when ``root``
    is the top of a git work tree (tracked files only), else every non-hidden file."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is not None and Path(os.fsdecode(top.strip())).resolve() == root.resolve():
        listed = _git(root, "ls-files", "-z", "--cached")
        if listed is not None:
            names = sorted({os.fsdecode(p) for p in listed.split(b"\0") if p})
            files, errors = [], []
            for name in names:
                path = root / name
                problem = _link_problem(path, follow_links) if path.is_symlink() else None
                if problem:
                    errors.append(Rejection(str(path), *problem))
                elif path.is_file():
                    files.append(name)
            head = _git(root, "rev-parse", "HEAD")
            return files, head.decode().strip() if head else None, errors
    found, errors = walk_files(root, {"__pycache__"}, follow_links)
    return [f.as_posix() for f in found], None, errors


class GitReader(IndexedReader):
    """A repository or source tree as one document (or, with ``each``, one per subdirectory)."""

    def __init__(self, spec: str, path: str, source: Optional[SourceSpec] = None) -> None:
        super().__init__(spec, source)
        self.root = _directory(spec, path)
        self.max_file_bytes = self.source.get("max_file_bytes", GIT_MAX_FILE_BYTES)
        self.max_doc_bytes = self.source.get("max_doc_bytes", GIT_MAX_DOC_BYTES)
        self.roots: list[Path] = []

    def index(self) -> list[Rejection]:
        if not self.source.get("each", False):
            self.roots = [self.root]
            return []
        try:
            self.roots = sorted((p for p in self.root.iterdir()
                                 if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
        except OSError as exc:
            return [Rejection(str(self.root), "unreadable", exc.strerror or str(exc))]
        return []

    def __len__(self) -> int:
        return len(self.roots)

    def read(self, i: int) -> Iterator[Item]:
        root = self.roots[i]
        files, commit, errors = list_tree(root, self.source.get("follow_links", True))
        yield from (Rejection(e.uri, e.reason, e.detail, part=True) for e in errors)
        include, exclude = self.source.patterns("include"), self.source.patterns("exclude")
        files = [f for f in files if selected(f, include, exclude)]
        text, used, languages, skipped = repo_document(
            root, files, self.max_file_bytes, self.max_doc_bytes, uri_prefix=f"{root}/")
        yield from skipped
        if text is None:
            yield Rejection(str(root), "empty", f"no usable file among {len(files)} selected")
            return
        meta = {"repository": root.name, "commit": commit, "files": len(used),
                "files_skipped": len(skipped), "bytes": len(text.encode("utf-8")),
                "languages": dict(languages.most_common())}
        language = languages.most_common(1)[0][0] if languages else None
        yield Record(str(root), text, meta, language)
