"""Readers for HTML, PDF, gzip, Parquet, gzipped JSONL, Hugging Face datasets and spec options,
on small files the tests create (no network)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.errors import UserError
from longalign.sourcing.readers import (
    HfDiskReader, HfStreamReader, ParquetReader, Record, Rejection, open_reader, parse_spec,
)
from longalign.sourcing.read_tables import buffer_shuffle
from sourcing_helpers import make_pdf, write


def read_all(reader, rng=None) -> list:
    items = list(reader.index())
    for candidate in reader.stream(rng):
        items.extend(candidate)
    return items


def by_name(items: list) -> dict:
    return {Path(i.uri.split(":")[0] if ":" in Path(i.uri).name else i.uri).name: i for i in items}


def test_dir_reader_extracts_html_pdf_gzip_and_keeps_markup_and_code(tmp_path: Path) -> None:
    d = tmp_path / "in"
    write(d / "page.html", "<html lang='fr'><head><title>Titre</title><style>p{}</style></head><body>"
          "<h1>Un</h1><p>Deux  trois\n quatre &amp; cinq</p><script>alert(1)</script>"
          "<pre>def f():\n    return 1</pre></body></html>")
    write(d / "doc.pdf", make_pdf(["First page line (a)\nsecond line", "Second page"]))
    write(d / "notes.md", "# Notes\n\n*emphasis* stays as written\n")
    write(d / "guide.rst", "Guide\n=====\n\n.. note:: kept verbatim\n")
    write(d / "code.py", "def main():\n    return 0\n")
    write(d / "packed.txt.gz", gzip.compress("compressed text\n".encode()))
    write(d / "page2.htm.gz", gzip.compress(b"<p>zipped <b>html</b></p>"))
    items = by_name(read_all(open_reader(f"dir:{d}")))
    html = items["page.html"]
    assert isinstance(html, Record) and html.language == "fr"
    assert html.data == "Titre\n\nUn\n\nDeux trois quatre & cinq\n\ndef f():\n    return 1\n"
    assert "alert" not in html.data and "p{}" not in html.data
    assert html.metadata["format"] == "html"
    pdf = items["doc.pdf"]
    assert pdf.data == "First page line (a)\nsecond line\n\nSecond page" and pdf.metadata["format"] == "pdf"
    assert items["notes.md"].data == b"# Notes\n\n*emphasis* stays as written\n"
    assert items["notes.md"].language == "markdown"
    assert items["guide.rst"].language == "restructuredtext"
    assert items["code.py"].language == "python"
    assert items["packed.txt.gz"].data == b"compressed text\n" and items["packed.txt.gz"].metadata["gzip"]
    assert items["page2.htm.gz"].data == "zipped html\n"


def test_dir_reader_bad_files_get_their_reasons(tmp_path: Path) -> None:
    d = tmp_path / "in"
    good = gzip.compress(("line\n" * 1000).encode())
    write(d / "truncated.txt.gz", good[: len(good) // 2])
    write(d / "notgzip.txt.gz", b"plain bytes, not gzip")
    pdf = make_pdf(["Some text"])
    write(d / "truncated.pdf", pdf[: len(pdf) // 2])
    write(d / "latin1.html", "<p>caf\u00e9</p>".encode("latin-1"))
    write(d / "cut.txt", "multibyte \u20ac".encode("utf-8")[:-1])  # cut inside the euro sign
    items = by_name(read_all(open_reader(f"dir:{d}")))
    assert {n: getattr(i, "reason", "ok") for n, i in items.items()} == {
        "truncated.txt.gz": "corrupt", "notgzip.txt.gz": "corrupt", "truncated.pdf": "corrupt",
        "latin1.html": "undecodable", "cut.txt": "ok"}
    assert items["cut.txt"].data.endswith(b"\xe2\x82")  # bytes: the stage rejects it as undecodable


def test_dir_include_exclude_globs(tmp_path: Path) -> None:
    for rel in ["a.py", "b.md", "tests/t.py", "pkg/c.py", "pkg/tests/u.py"]:
        write(tmp_path / rel, "x\n")
    reader = open_reader(f"dir:{tmp_path}?include=*.py&exclude=tests/*,*/tests/*")
    names = [Path(i.uri).relative_to(tmp_path).as_posix() for i in read_all(reader)]
    assert names == ["a.py", "pkg/c.py"]


def jsonl_text(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def test_jsonl_gzip_and_its_corruption(tmp_path: Path) -> None:
    rows = [{"body": f"doc {i}", "lang": "en"} for i in range(5)] + ["{broken"]
    write(tmp_path / "d" / "a.jsonl.gz", gzip.compress(jsonl_text(rows).encode()))
    full = gzip.compress(jsonl_text([{"body": "x" * 50 + str(i)} for i in range(2000)]).encode())
    write(tmp_path / "d" / "b.jsonl.gz", full[: len(full) * 2 // 3])
    reader = open_reader(f"jsonl:{tmp_path / 'd'}?field=body")
    items = read_all(reader)
    first = [i for i in items if "a.jsonl.gz" in i.uri]
    assert [getattr(i, "data", None) or i.reason for i in first] == [f"doc {i}" for i in range(5)] + ["malformed"]
    assert first[0].language == "en" and first[0].uri.endswith("a.jsonl.gz:1")
    second = [i for i in items if "b.jsonl.gz" in i.uri]
    assert isinstance(second[-1], Rejection) and second[-1].reason == "corrupt"
    assert 0 < len(second) - 1 < 2000
    assert all(isinstance(i, Record) for i in second[:-1])


def test_gzip_jsonl_shuffle_is_seeded_and_complete(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl.gz", gzip.compress(jsonl_text([{"text": str(i)} for i in range(3000)]).encode()))
    reader = open_reader(f"jsonl:{tmp_path / 'a.jsonl.gz'}")
    reader.index()
    assert reader.size == 3000

    def order(seed):
        return [c[0].data for c in reader.stream(np.random.default_rng(seed))]

    a, b, c = order(1), order(1), order(2)
    assert a == b != c and sorted(a, key=int) == [str(i) for i in range(3000)]
    assert a[:20] != [str(i) for i in range(20)]


def test_buffer_shuffle_is_bounded() -> None:
    out = list(buffer_shuffle(((i, 10) for i in range(100)), np.random.default_rng(0), max_items=8))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert all(out.index(i) >= i - 8 for i in range(100))  # an item leaves at most 8 places early


def write_parquet(path: Path, table: pa.Table, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


def test_parquet_reader_fields_bad_rows_and_bad_files(tmp_path: Path) -> None:
    d = tmp_path / "pq"
    write_parquet(d / "a.parquet", pa.table({
        "content": ["one", None, "three", "four"], "lang": ["en", "en", None, "de"],
        "blob": [b"x", b"y", b"z", b"w"], "n": [1, 2, 3, 4]}), row_group_size=2)
    write_parquet(d / "b.parquet", pa.table({"text": ["no content column"]}))
    write_parquet(d / "c.parquet", pa.table({"content": [1, 2]}))
    good = (d / "a.parquet").read_bytes()
    write(d / "d.parquet", good[: len(good) // 2])
    reader = open_reader(f"parquet:{d}#content")
    assert isinstance(reader, ParquetReader)
    errors = reader.index()
    assert sorted((Path(e.uri).name, e.reason) for e in errors) == [
        ("b.parquet", "missing_field"), ("c.parquet", "malformed"), ("d.parquet", "corrupt")]
    assert reader.size == 4
    items = [i for c in reader.stream(None) for i in c]
    assert [getattr(i, "data", None) or i.reason for i in items] == ["one", "missing_field", "three", "four"]
    assert items[0].metadata == {"lang": "en", "n": 1} and items[0].language == "en"
    assert items[3].uri.endswith("a.parquet:3") and items[3].language == "de"
    shuffled = [c[0].uri for c in reader.stream(np.random.default_rng(3))]
    assert sorted(shuffled) == sorted(i.uri for i in items)
    assert open_reader(f"parquet:{d / 'a.parquet'}?field=content").field == "content"


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> Path:
    import datasets

    root = tmp_path_factory.mktemp("hf")
    rows = {"text": [f"row {i}" for i in range(6)], "lang": ["en"] * 6}
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "single"))
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"body": ["t0", "t1"]}),
        "test": datasets.Dataset.from_dict({"body": ["e0", None]}),
    }).save_to_disk(str(root / "dict"))
    write(root / "files" / "part-0.jsonl", jsonl_text([{"text": f"file row {i}"} for i in range(4)]))
    return root


def test_hf_saved_dataset_and_splits(hf_dirs: Path) -> None:
    single = open_reader(f"hf:{hf_dirs / 'single'}")
    assert isinstance(single, HfDiskReader) and single.size == 6
    items = read_all(single)
    assert [i.data for i in items] == [f"row {i}" for i in range(6)] and items[0].language == "en"
    shuffled = [c[0].data for c in single.stream(np.random.default_rng(0))]
    assert sorted(shuffled) == sorted(i.data for i in items) and shuffled != [i.data for i in items]
    train = read_all(open_reader(f"hf:{hf_dirs / 'dict'}?field=body"))
    assert [i.data for i in train] == ["t0", "t1"]
    test = read_all(open_reader(f"hf:{hf_dirs / 'dict'}::test?field=body"))
    assert [getattr(i, "data", None) or i.reason for i in test] == ["e0", "missing_field"]
    with pytest.raises(UserError, match="choose a split"):
        open_reader(f"hf:{hf_dirs / 'dict'}::validation")


def test_hf_streams_local_data_files(hf_dirs: Path) -> None:
    reader = open_reader(f"hf:{hf_dirs / 'files'}")
    assert isinstance(reader, HfStreamReader)
    items = read_all(reader)
    assert [i.data for i in items] == [f"file row {i}" for i in range(4)]
    assert items[0].uri.endswith("#0:0")  # shard 0, row 0
    shuffled = [c[0].data for c in reader.stream(np.random.default_rng(5))]
    assert sorted(shuffled) == [f"file row {i}" for i in range(4)]


def test_hf_unknown_dataset_is_a_user_error_offline(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open dataset"):
        open_reader(f"hf:{tmp_path / 'no-such-dataset'}")


def test_spec_options_parsed_and_checked() -> None:
    spec = parse_spec("git:/r?include=*.py,*.md&exclude=tests/*&max_file_bytes=100&each=true&group=code")
    assert (spec.scheme, spec.target, spec.group) == ("git", "/r", "code")
    assert spec.patterns("include") == ["*.py", "*.md"] and spec.get("each") is True
    assert spec.get("max_file_bytes") == 100
    assert parse_spec("jsonl:/x.jsonl#body?min_tokens=5").options == {"field": "body", "min_tokens": 5}
    assert parse_spec("hf:org/name:cfg:split").target == "org/name:cfg:split"
    assert parse_spec("stdlib:").group == "stdlib:"
    for bad, message in [("dir:/x?field=t", "unknown option"), ("git:/x?max_file_bytes=-1", "positive"),
                         ("jsonl:/x?min_tokens=9&max_tokens=3", "min_tokens"),
                         ("git:/x?each=maybe", "true or false"), ("dir:/x?novalue", "key=value"),
                         ("parquet:", "needs a path"), ("ftp:/x", "unknown source")]:
        with pytest.raises(UserError, match=message):
            parse_spec(bad)


def test_hf_stream_a_broken_data_file_ends_only_itself_until_several_break(tmp_path: Path) -> None:
    from longalign.sourcing.read_tables import STREAM_FAILURES

    def folder(name: str, broken: set[int], files: int = 5) -> str:
        for k in range(files):
            body = "{not json\n" if k in broken else jsonl_text([{"text": f"{name} {k}"}])
            write(tmp_path / name / f"part-{k}.jsonl", body)
        return f"hf:{tmp_path / name}"

    one = read_all(open_reader(folder("one", {2})))
    assert [getattr(i, "data", None) or i.reason for i in one] == [
        "one 0", "one 1", "unreadable", "one 3", "one 4"]
    assert one[2].uri.endswith("#2:0") and "stream failed" in one[2].detail
    assert STREAM_FAILURES == 3
    many = read_all(open_reader(folder("many", {1, 2, 3})))
    assert [getattr(i, "data", None) or i.reason for i in many] == [
        "many 0", "unreadable", "unreadable", "unreadable", "unreadable"]
    assert "data files 4-4 not read" in many[-1].detail  # the hub unreachable: stop trying
    gaps = read_all(open_reader(folder("gaps", {0, 1, 3, 4}, files=6)))  # a good file in between
    assert [getattr(i, "data", None) or i.reason for i in gaps] == [
        "unreadable", "unreadable", "gaps 2", "unreadable", "unreadable", "gaps 5"]
