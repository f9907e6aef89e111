"""Readers of row-shaped sources: ``jsonl:``, ``parquet:`` and ``hf:``.

Every row is one candidate; its text is in the source's ``field`` (default ``text``), its other
keys/columns become metadata (binary columns are left out), and a ``language`` or ``lang``
string becomes the document's language.

Shuffling (with a seed) without reading everything into memory:

- plain ``.jsonl``: lines are indexed by byte offset and read in a seeded permutation;
- ``.jsonl.gz`` (cannot seek): read in order through a seeded shuffle buffer of ``BUFFER_ROWS``
  lines (at most ``BUFFER_BYTES``), files visited in a seeded order;
- Parquet: row groups in a seeded order, rows shuffled within each batch of ``BATCH_ROWS``;
- ``hf:`` saved with ``save_to_disk``: a permutation of rows (Arrow is memory-mapped);
  streamed hub datasets: ``IterableDataset.shuffle(seed, buffer_size=BUFFER_ROWS)``.
"""

from __future__ import annotations

import gzip
import json
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Generator, Iterable, Iterator, Optional

import numpy as np

from longalign.errors import UserError
from longalign.sourcing.base import IndexedReader, Item, Reader, Record, Rejection, interleave
from longalign.sourcing.files import GZIP_ERRORS
from longalign.sourcing.read_files import walk_files
from longalign.sourcing.specs import SourceSpec

BUFFER_ROWS = 1024
BUFFER_BYTES = 64 * 1024 * 1024
BATCH_ROWS = 64
STREAM_FAILURES = 3  # data files of an hf stream failing in a row before the rest is skipped
STREAM_FAILED = "stream failed"


def row_item(uri: str, row: Any, text_field: str) -> Item:
    """The Record of one row (a dict), or why it has none."""
    if not isinstance(row, dict):
        return Rejection(uri, "malformed", f"a row must be a JSON object, got {type(row).__name__}")
    if text_field not in row or row[text_field] is None:
        return Rejection(uri, "missing_field", f"no {text_field!r} field")
    text = row[text_field]
    if not isinstance(text, str):
        return Rejection(uri, "malformed", f"field {text_field!r} is {type(text).__name__}, not a string")
    meta = {k: v for k, v in row.items() if k != text_field and not isinstance(v, (bytes, bytearray))}
    language = next((meta[k] for k in ("language", "lang") if isinstance(meta.get(k), str)), None)
    return Record(uri, text, meta, language)


def parse_line(uri: str, raw: bytes, text_field: str) -> Item:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejection(uri, "undecodable", f"{exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return Rejection(uri, "malformed", f"not JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(obj, dict):
        return Rejection(uri, "malformed", f"a line must hold a JSON object, got {type(obj).__name__}")
    return row_item(uri, obj, text_field)


def buffer_shuffle(items: Iterable[tuple[Any, int]], rng: np.random.Generator,
                   max_items: int = BUFFER_ROWS, max_bytes: int = BUFFER_BYTES) -> Iterator[Any]:
    """Seeded shuffle of a stream through a bounded buffer ((item, size in bytes) pairs in)."""
    buf: list[tuple[Any, int]] = []
    held = 0

    def pop() -> Any:
        nonlocal held
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        item, size = buf.pop()
        held -= size
        return item

    for item, size in items:
        buf.append((item, size))
        held += size
        while buf and (len(buf) >= max_items or held >= max_bytes):
            yield pop()
    while buf:
        yield pop()


def _files(path: Path, suffixes: tuple[str, ...]) -> tuple[list[Path], list[Rejection]]:
    if not path.is_dir():
        return [path], []
    found, errors = walk_files(path, {"__pycache__"})
    return [path / f for f in found if f.name.endswith(suffixes)], errors


def _close_all(opened: dict[int, BinaryIO]) -> None:
    for handle in opened.values():
        handle.close()
    opened.clear()


class JsonlReader(Reader):
    """One JSON object per line, in ``.jsonl`` or ``.jsonl.gz`` files."""

    def __init__(self, spec: str, path: str, text_field: str = "text",
                 source: Optional[SourceSpec] = None) -> None:
        super().__init__(spec, source)
        self.path = Path(path).expanduser()
        self.field = self.source.get("field", text_field)
        if not self.path.exists():
            raise UserError(f"source {spec!r}: path not found: {self.path}")
        self.files: list[Path] = []
        self.file_of = array("l")  # plain candidate -> index into self.files
        self.offsets = array("q")  # plain candidate -> byte offset of its line
        self.lines = array("l")  # plain candidate -> 1-based line number
        self.gz: list[tuple[Path, int]] = []  # gzip files and their non-blank line counts

    def index(self) -> list[Rejection]:
        found, errors = _files(self.path, (".jsonl", ".jsonl.gz"))
        for path in found:
            if path.name.endswith(".gz"):
                self.gz.append((path, self._count_gz(path)))
                continue
            n = len(self.files)
            self.files.append(path)
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

    @staticmethod
    def _count_gz(path: Path) -> int:
        count = 0
        try:
            with gzip.open(path, "rb") as handle:
                for line in handle:
                    count += bool(line.strip())
        except GZIP_ERRORS:
            pass  # reported once, when the file is streamed
        return count

    def __len__(self) -> int:
        return len(self.offsets) + sum(n for _, n in self.gz)

    @property
    def size(self) -> int:
        return len(self)

    def read(self, i: int, opened: Optional[dict[int, BinaryIO]] = None) -> Iterator[Item]:
        """Candidate ``i`` among the lines of the plain (not gzip) files. With ``opened`` (file
        index -> handle, closed by the caller), the file stays open for the next line read."""
        f = self.file_of[i]
        path = self.files[f]
        uri = f"{path}:{self.lines[i]}"
        try:
            if opened is None:
                with open(path, "rb") as handle:
                    handle.seek(self.offsets[i])
                    raw = handle.readline()
            else:
                if f not in opened:
                    _close_all(opened)
                    opened[f] = open(path, "rb")
                opened[f].seek(self.offsets[i])
                raw = opened[f].readline()
        except OSError as exc:
            if opened is not None:
                _close_all(opened)
            yield Rejection(uri, "unreadable", exc.strerror or str(exc))
            return
        yield parse_line(uri, raw, self.field)

    def _plain(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        n = len(self.offsets)
        opened: dict[int, BinaryIO] = {}
        try:
            for i in range(n) if rng is None else rng.permutation(n):
                self.visited += 1
                yield list(self.read(int(i), opened))
        finally:
            _close_all(opened)

    def _gz_lines(self, path: Path) -> Iterator[tuple[list[Item], int]]:
        lineno = 0
        try:
            with gzip.open(path, "rb") as handle:
                for lineno, raw in enumerate(handle, start=1):
                    if raw.strip():
                        yield [parse_line(f"{path}:{lineno}", raw, self.field)], len(raw)
        except GZIP_ERRORS as exc:
            yield [Rejection(f"{path}:{lineno + 1}", "corrupt", f"bad gzip: {exc}")], 0

    def _gz(self, path: Path, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        lines = self._gz_lines(path)
        for items in (buffer_shuffle(lines, rng) if rng is not None else (i for i, _ in lines)):
            self.visited += 1
            yield items

    def segments(self) -> int:
        """Each line of the plain files; then, per gzip file, each of its lines and a last
        segment for what follows them (the rejection of a file that breaks off, else nothing)."""
        return len(self.offsets) + sum(n + 1 for _, n in self.gz)

    def read_segment(self, s: int) -> Iterator[list[Item]]:
        return self.read_segments(s, s + 1)

    def read_segments(self, start: int, stop: int) -> Iterator[list[Item]]:
        opened: dict[int, BinaryIO] = {}
        try:
            for s in range(start, min(stop, len(self.offsets))):
                yield list(self.read(s, opened))
        finally:
            _close_all(opened)
        at = len(self.offsets)
        for path, n in self.gz:  # gzip cannot seek: decompress and skip to the run's first line
            lo, hi = max(start - at, 0), min(stop - at, n + 1)
            if lo < hi:
                for j, (items, _) in enumerate(self._gz_lines(path)):
                    if j >= hi:
                        break
                    if j >= lo:
                        yield items
            at += n + 1

    def stream(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        gz = list(self.gz)
        if rng is not None:
            gz = [gz[int(k)] for k in rng.permutation(len(gz))]
        streams = [self._plain(rng)] + [self._gz(p, rng) for p, _ in gz]
        yield from interleave(streams, [len(self.offsets)] + [n for _, n in gz], rng)


class ParquetReader(Reader):
    """Rows of one Parquet file or of every ``.parquet`` file under a directory."""

    def __init__(self, spec: str, path: str, source: Optional[SourceSpec] = None) -> None:
        super().__init__(spec, source)
        self.path = Path(path).expanduser()
        self.field = self.source.get("field", "text")
        if not self.path.exists():
            raise UserError(f"source {spec!r}: path not found: {self.path}")
        self.units: list[tuple[Path, int, int, int]] = []  # (file, row group, first row, rows)

    def index(self) -> list[Rejection]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        found, errors = _files(self.path, (".parquet",))
        for path in found:
            try:
                meta = pq.ParquetFile(path)
                schema = meta.schema_arrow
            except (pa.ArrowException, OSError) as exc:
                errors.append(Rejection(str(path), "corrupt", f"not a readable Parquet file: {exc}"))
                continue
            rows = meta.metadata.num_rows
            if self.field not in schema.names:
                errors.append(Rejection(str(path), "missing_field", f"no column {self.field!r} "
                                        f"(columns: {', '.join(schema.names)}); {rows} rows skipped"))
                continue
            kind = schema.field(self.field).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                    or pa.types.is_string_view(kind)):
                errors.append(Rejection(str(path), "malformed", f"column {self.field!r} is {kind}, "
                                        f"not a string; {rows} rows skipped"))
                continue
            first = 0
            for g in range(meta.num_row_groups):
                n = meta.metadata.row_group(g).num_rows
                self.units.append((path, g, first, n))
                first += n
        return errors

    @property
    def size(self) -> int:
        return sum(u[3] for u in self.units)

    def _unit(self, path: Path, group: int, first: int, rows: int,
              rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        done = 0
        try:
            handle = pq.ParquetFile(path)
            for batch in handle.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
                records = batch.to_pylist()
                order = range(len(records)) if rng is None else rng.permutation(len(records))
                for j in order:
                    yield [row_item(f"{path}:{first + done + int(j)}", records[int(j)], self.field)]
                done += len(records)
        except (pa.ArrowException, OSError) as exc:
            yield [Rejection(f"{path}:{first + done}", "corrupt",
                             f"row group {group} unreadable after {done} of {rows} rows: {exc}")]

    def segments(self) -> int:
        """Each row group of each file."""
        return len(self.units)

    def read_segment(self, s: int) -> Iterator[list[Item]]:
        return self._unit(*self.units[s], None)

    def stream(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        order = range(len(self.units)) if rng is None else rng.permutation(len(self.units))
        for k in order:
            for items in self._unit(*self.units[int(k)], rng):
                self.visited += 1
                yield items


class HfDiskReader(IndexedReader):
    """A dataset saved with ``datasets.Dataset.save_to_disk`` (memory-mapped Arrow)."""

    def __init__(self, spec: str, dataset, name: str, source: SourceSpec) -> None:
        super().__init__(spec, source)
        self.dataset = dataset
        self.name = name
        self.field = source.get("field", "text")

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, i: int) -> Iterator[Item]:
        yield row_item(f"{self.name}#{i}", self.dataset[i], self.field)


class HfStreamReader(Reader):
    """A Hugging Face dataset read with ``streaming=True`` (hub or local data files)."""

    def __init__(self, spec: str, dataset, name: str, size: Optional[int], source: SourceSpec) -> None:
        super().__init__(spec, source)
        self.dataset = dataset
        self.name = name
        self._size = size
        self.field = source.get("field", "text")

    @property
    def size(self) -> Optional[int]:
        return self._size

    def segments(self) -> int:
        """The stream's shards (its data files, on the hub or local), which ``read_segments``
        reads in order; one after another they are the stream."""
        return max(1, int(getattr(self.dataset, "n_shards", 1) or 1))

    def read_segment(self, s: int) -> Iterator[list[Item]]:
        return self.read_segments(s, s + 1)

    def read_segments(self, start: int, stop: int) -> Iterator[list[Item]]:
        """Data files ``start`` to ``stop - 1``. A file whose stream fails ends with an
        ``unreadable`` rejection and the next file is read; after ``STREAM_FAILURES`` such files
        in a row (the hub unreachable: each would wait out the library's retries) the rest of
        the run is one rejection."""
        n = self.segments()
        failed = 0
        for s in range(start, stop):
            if failed >= STREAM_FAILURES:
                yield [Rejection(f"{self.name}#{s}:0", "unreadable",
                                 f"the stream failed in {failed} data files in a row: data files "
                                 f"{s}-{stop - 1} not read")]
                return
            shard = self.dataset if n == 1 else self.dataset.shard(num_shards=n, index=s,
                                                                    contiguous=True)
            broke = yield from self._rows(shard, f"{self.name}#{s}:")
            failed = failed + 1 if broke else 0

    def _rows(self, data, prefix: str) -> Generator[list[Item], None, bool]:
        """The rows of ``data``; a failing stream ends with an ``unreadable`` rejection.
        Returns whether it failed."""
        i = 0
        try:
            for i, row in enumerate(data):
                yield [row_item(f"{prefix}{i}", row, self.field)]
        except Exception as exc:  # network or file errors end this shard (or shuffled stream)
            yield [Rejection(f"{prefix}{i}", "unreadable", f"{STREAM_FAILED}: {type(exc).__name__}: {exc}")]
            return True
        return False

    def stream(self, rng: Optional[np.random.Generator]) -> Iterator[list[Item]]:
        """In order: shard by shard, rows named NAME#SHARD:ROW. Shuffled: the datasets library's
        shuffle buffer over the shards in a seeded order, rows named NAME#DRAW."""
        rows = (self.read_segments(0, self.segments()) if rng is None else self._rows(
            self.dataset.shuffle(seed=int(rng.integers(2**31)), buffer_size=BUFFER_ROWS),
            f"{self.name}#"))
        for items in rows:
            self.visited += 1
            yield items


def open_hf(spec: str, source: SourceSpec) -> Reader:
    """``hf:NAME[:config][:split]``: a saved dataset folder, else ``load_dataset(streaming=True)``."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"source {spec!r} needs the 'datasets' package (pip install datasets)") from None
    target = source.target
    if Path(target).expanduser().exists():
        name, config, split = target, None, None
    else:
        name, config, split = (target.split(":") + [None, None])[:3]
    config, split = config or None, split or None
    path = Path(name).expanduser()
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = split or ("train" if "train" in loaded else None)
            if split not in loaded:
                raise UserError(f"source {spec!r}: choose a split: {', '.join(loaded)} "
                                f"(hf:{name}::SPLIT)")
            loaded = loaded[split]
        return HfDiskReader(spec, loaded, f"{name}:{split}" if split else name, source)
    split = split or "train"
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # not found, offline, gated, bad config: the user must fix the spec
        raise UserError(f"source {spec!r}: cannot open dataset {name!r} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    size = None
    try:
        size = stream.info.splits[split].num_examples or None
    except (AttributeError, KeyError, TypeError):
        pass
    return HfStreamReader(spec, stream, f"{name}:{config or ''}:{split}", size, source)
