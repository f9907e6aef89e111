"""Turning one file into raw document data: plain text, gzip, HTML and PDF.

- ``.gz``: decompressed (capped at ``MAX_FILE_BYTES``); the name without ``.gz`` decides the kind.
  A corrupt or truncated gzip is rejected as ``corrupt``.
- ``.html`` / ``.htm`` / ``.xhtml``: visible text (``longalign.sourcing.htmltext``), UTF-8 only.
- ``.pdf``: text of every page with pypdf, pages separated by a blank line; an unparsable or
  truncated PDF is ``corrupt``, an encrypted one ``unreadable``.
- anything else (text, Markdown, reStructuredText, source code): the bytes, decoded later as
  UTF-8; a NUL byte in the first ``SNIFF_BYTES`` marks a binary file before it is read whole.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from pathlib import Path
from typing import Any, Optional, Union

from longalign.sourcing.base import LANGUAGES, Rejection
from longalign.sourcing.htmltext import html_to_text

MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are rejected unread ("too_large")
SNIFF_BYTES = 8192
HTML = {".html", ".htm", ".xhtml"}
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def read_bytes(path: Path, uri: str, limit: int = MAX_FILE_BYTES, sniff: bool = True) -> Union[bytes, Rejection]:
    """Read a file whole unless it is too large or (with ``sniff``) starts like a binary file."""
    try:
        size = path.stat().st_size
        if size > limit:
            return Rejection(uri, "too_large", f"{size} bytes > {limit}")
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if sniff and b"\x00" in head:
                return Rejection(uri, "binary", "NUL byte in the first bytes")
            return head + handle.read()
    except OSError as exc:
        return Rejection(uri, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")


def gunzip(data: bytes, uri: str, limit: int = MAX_FILE_BYTES) -> Union[bytes, Rejection]:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            out = handle.read(limit + 1)
    except GZIP_ERRORS as exc:
        return Rejection(uri, "corrupt", f"bad gzip: {exc}")
    if len(out) > limit:
        return Rejection(uri, "too_large", f"more than {limit} bytes once decompressed")
    return out


def pdf_text(data: bytes, uri: str) -> Union[str, Rejection]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed files are reported by us
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            return Rejection(uri, "unreadable", "encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, zlib.error) as exc:
        return Rejection(uri, "corrupt", f"bad PDF: {type(exc).__name__}: {exc}")
    return "\n\n".join(p.strip() for p in pages if p.strip())


def load_file(path: Path, uri: str) -> Union[tuple[Union[str, bytes], dict[str, Any], Optional[str]], Rejection]:
    """(data, metadata, language) of one file, or the Rejection saying why it cannot be used."""
    name = path.name.lower()
    compressed = name.endswith(".gz")
    kind = Path(name[:-3] if compressed else name).suffix
    raw = read_bytes(path, uri, sniff=not compressed and kind != ".pdf")
    if isinstance(raw, Rejection):
        return raw
    meta: dict[str, Any] = {"bytes": len(raw)}
    if compressed:
        raw = gunzip(raw, uri)
        if isinstance(raw, Rejection):
            return raw
        meta["gzip"] = True
    if kind == ".pdf":
        text = pdf_text(raw, uri)
        if isinstance(text, Rejection):
            return text
        return text, {**meta, "format": "pdf"}, None
    if kind in HTML:
        try:
            html = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection(uri, "undecodable", f"{exc.reason} at byte {exc.start}")
        text, lang = html_to_text(html)
        return text, {**meta, "format": "html"}, lang
    return raw, meta, LANGUAGES.get(kind)
