"""Readers: turn a source spec into raw records (one reader class per scheme).

A source spec is URI-like, ``scheme:TARGET[?key=value&...]`` (see ``longalign.sourcing.specs``):

- ``stdlib:`` (or ``stdlib:PATH`` for another Python's ``lib/pythonX.Y``): Python's own standard
  library, one repository document per top-level package and one per top-level module file.
- ``dir:PATH``: every regular file under PATH, recursively, in sorted path order (hidden files and
  ``__pycache__`` skipped): text, Markdown, reStructuredText and source code as they are, HTML as
  its visible text, PDF as the text of its pages, ``.gz`` decompressed; binary files are rejected.
- ``jsonl:PATH[#field]``: one JSON object per line in a ``.jsonl``/``.jsonl.gz`` file or a
  directory of them; the text is in ``field`` (default ``text``), other keys become metadata.
- ``parquet:PATH[#field]``: rows of a Parquet file or a directory of them, same fields rule.
- ``hf:NAME[:config][:split]``: a Hugging Face dataset, streamed (on the cluster), or a folder
  written by ``save_to_disk``, or a local folder of data files.
- ``git:PATH``: a git repository or source tree as one repository document (tracked files in
  sorted path order behind path headers), with include/exclude globs and size caps.

The reader interface is described in ``longalign.sourcing.base``.
"""

from __future__ import annotations

from typing import Union

from longalign.sourcing.base import (  # noqa: F401  (re-exported)
    IndexedReader, Item, Reader, Record, Rejection, interleave, language_of,
)
from longalign.sourcing.files import MAX_FILE_BYTES, SNIFF_BYTES  # noqa: F401
from longalign.sourcing.read_files import DirReader, GitReader, StdlibReader  # noqa: F401
from longalign.sourcing.read_tables import (  # noqa: F401
    HfDiskReader, HfStreamReader, JsonlReader, ParquetReader, open_hf,
)
from longalign.sourcing.specs import SCHEMES, SourceSpec, parse_spec  # noqa: F401

AnyReader = Union[StdlibReader, DirReader, JsonlReader, ParquetReader, GitReader,
                  HfDiskReader, HfStreamReader]


def open_reader(spec: str) -> Reader:
    """Build the reader for one source spec; an unknown scheme, bad option or missing path is a
    UserError."""
    source = parse_spec(spec)
    if source.scheme == "stdlib":
        return StdlibReader(spec, source.target or None, source=source)
    if source.scheme == "dir":
        return DirReader(spec, source.target, source=source)
    if source.scheme == "jsonl":
        return JsonlReader(spec, source.target, source.get("field", "text"), source=source)
    if source.scheme == "parquet":
        return ParquetReader(spec, source.target, source=source)
    if source.scheme == "git":
        return GitReader(spec, source.target, source=source)
    return open_hf(spec, source)
