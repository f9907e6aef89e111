"""Readers: stdlib:, dir:, jsonl: on small trees the tests create, and spec errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sourcing_helpers import write

from longalign.errors import UserError
from longalign.sourcing.readers import (
    DirReader,
    JsonlReader,
    Record,
    Rejection,
    StdlibReader,
    open_reader,
)


def read_all(reader) -> list:
    errors = reader.index()
    items = list(errors)
    for i in range(len(reader)):
        items.extend(reader.read(i))
    return items


@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    write(root / "os.py", "import sys\n")
    write(root / "email" / "parser.py", "class Parser:\n    pass\n")
    write(root / "email" / "__init__.py", '"""Email."""\n')
    write(root / "email" / "mime" / "text.py", "TEXT = 1\n")
    write(root / "email" / "latin.py", b"x = '\xe9'\n")  # Latin-1, not UTF-8
    write(root / "email" / "test" / "test_parser.py", "assert True\n")
    write(root / "email" / "README.txt", "not python\n")
    write(root / "idlelib" / "idle_test" / "t.py", "x = 1\n")
    write(root / "idlelib" / "editor.py", "EDITOR = 1\n")
    write(root / "test" / "test_os.py", "x = 1\n")
    write(root / "site-packages" / "pkg" / "mod.py", "x = 1\n")
    write(root / "__pycache__" / "os.cpython-311.py", "x = 1\n")
    write(root / "config-3.11-x86_64-linux-gnu" / "python-config.py", "x = 1\n")
    return root


def test_stdlib_groups_packages_with_file_headers(fake_stdlib: Path) -> None:
    reader = open_reader(f"stdlib:{fake_stdlib}")
    items = read_all(reader)
    records = {r.uri: r for r in items if isinstance(r, Record)}
    assert sorted(records) == ["email", "idlelib", "os"]
    email = records["email"]
    assert email.data == (
        '# ===== file: email/__init__.py =====\n"""Email."""\n\n\n'
        "# ===== file: email/mime/text.py =====\nTEXT = 1\n\n\n"
        "# ===== file: email/parser.py =====\nclass Parser:\n    pass\n"
    )
    assert email.language == "python"
    assert email.metadata["files"] == ["email/__init__.py", "email/mime/text.py", "email/parser.py"]
    assert "idle_test" not in records["idlelib"].data
    rejections = [r for r in items if isinstance(r, Rejection)]
    assert [(r.uri, r.reason) for r in rejections] == [("email/latin.py", "undecodable")]


def test_stdlib_default_is_pythons_own_library() -> None:
    reader = open_reader("stdlib:")
    assert reader.index() == []
    names = [name for name, _ in reader.groups]
    assert {"email", "json", "asyncio", "http", "os", "typing"} <= set(names)
    assert not {"test", "site-packages", "lib-dynload", "__pycache__"} & set(names)
    json_files = dict(reader.groups)["json"]
    assert [f.as_posix() for f in json_files] == sorted(f.as_posix() for f in json_files)
    assert all("/test" not in f.as_posix() and "idle_test" not in f.as_posix()
               for _, files in reader.groups for f in files)


def test_dir_reader_recursive_sorted_skips_hidden(tmp_path: Path) -> None:
    write(tmp_path / "b.md", "# B\n")
    write(tmp_path / "a" / "z.py", "print(1)\n")
    write(tmp_path / "a" / "y.txt", "plain\n")
    write(tmp_path / ".git" / "config", "hidden\n")
    write(tmp_path / ".hidden.txt", "hidden\n")
    write(tmp_path / "blob.bin", b"\x89PNG\x00\x00\x01")
    items = read_all(open_reader(f"dir:{tmp_path}"))
    assert [Path(i.uri).relative_to(tmp_path).as_posix() for i in items] == [
        "a/y.txt", "a/z.py", "b.md", "blob.bin"]
    by_name = {Path(i.uri).name: i for i in items}
    assert by_name["z.py"].language == "python"
    assert by_name["b.md"].language == "markdown"
    assert by_name["y.txt"].language is None
    assert by_name["y.txt"].data == b"plain\n"
    assert isinstance(by_name["blob.bin"], Rejection) and by_name["blob.bin"].reason == "binary"


def test_dir_reader_counts_vanished_file_as_unreadable(tmp_path: Path) -> None:
    gone = write(tmp_path / "gone.txt", "soon deleted\n")
    reader = open_reader(f"dir:{tmp_path}")
    reader.index()
    gone.unlink()
    [item] = list(reader.read(0))
    assert isinstance(item, Rejection) and item.reason == "unreadable"
    assert item.uri.endswith("gone.txt")


def test_jsonl_reader_counts_bad_lines_with_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "docs.jsonl", "\n".join([
        json.dumps({"text": "first", "title": "A", "language": "en"}),
        "{not json",
        json.dumps({"body": "no text field"}),
        "",
        json.dumps(["a", "list"]),
        json.dumps({"text": 42}),
        json.dumps({"text": "last"}),
    ]) + "\n")
    items = read_all(open_reader(f"jsonl:{path}"))
    assert [(i.uri.rsplit(":", 1)[1], getattr(i, "reason", "ok")) for i in items] == [
        ("1", "ok"), ("2", "malformed"), ("3", "missing_field"), ("5", "malformed"),
        ("6", "malformed"), ("7", "ok")]
    first = items[0]
    assert first.data == "first" and first.metadata == {"title": "A", "language": "en"}
    assert first.language == "en"
    assert first.uri == f"{path}:1"


def test_jsonl_field_after_hash_and_directory_of_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "b.jsonl", json.dumps({"body": "two"}) + "\n")
    write(tmp_path / "d" / "a.jsonl", json.dumps({"body": "one"}) + "\n" + json.dumps({"text": "x"}) + "\n")
    write(tmp_path / "d" / "notes.txt", "ignored\n")
    reader = open_reader(f"jsonl:{tmp_path / 'd'}#body")
    assert isinstance(reader, JsonlReader) and reader.field == "body"
    items = read_all(reader)
    assert [getattr(i, "data", None) or i.reason for i in items] == ["one", "missing_field", "two"]


def test_jsonl_lines_of_a_file_are_read_through_one_handle(tmp_path: Path, monkeypatch) -> None:
    """Streaming, or reading a run of segments, opens each plain file once (not once a line);
    a file that becomes unreadable mid-run gives one rejection per remaining line, each with its
    own line number, and the next file is read again."""
    import builtins

    import longalign.sourcing.read_tables as read_tables

    for name in ("a", "b"):
        write(tmp_path / "d" / f"{name}.jsonl",
              "".join(json.dumps({"text": f"{name}{k}"}) + "\n" for k in range(20)))
    reader = open_reader(f"jsonl:{tmp_path / 'd'}")
    reader.index()
    opened = []

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(read_tables, "open", counting_open, raising=False)
    streamed = [i.data for items in reader.stream(None) for i in items]
    assert streamed == [f"{n}{k}" for n in "ab" for k in range(20)]
    assert opened == ["a.jsonl", "b.jsonl"]
    opened.clear()
    run = [i.data for items in reader.read_segments(15, 25) for i in items]
    assert run == [f"a{k}" for k in range(15, 20)] + [f"b{k}" for k in range(5)]
    assert opened == ["a.jsonl", "b.jsonl"]

    def failing_open(path, *args, **kwargs):
        if Path(path).name == "a.jsonl":
            raise PermissionError(13, "Permission denied")
        return counting_open(path, *args, **kwargs)

    opened.clear()
    monkeypatch.setattr(read_tables, "open", failing_open, raising=False)
    items = [i for items in reader.read_segments(18, 22) for i in items]
    got = [(Path(i.uri).name, i.reason if isinstance(i, Rejection) else i.data) for i in items]
    assert got == [
        ("a.jsonl:19", "unreadable"), ("a.jsonl:20", "unreadable"), ("b.jsonl:1", "b0"),
        ("b.jsonl:2", "b1")]
    assert opened == ["b.jsonl"]


def test_jsonl_undecodable_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", b'{"text": "caf\xe9"}\n')
    [item] = read_all(open_reader(f"jsonl:{path}"))
    assert isinstance(item, Rejection) and item.reason == "undecodable"


@pytest.mark.parametrize("spec, message", [
    ("http://example.com", "unknown source"),
    ("books", "unknown source"),
    ("dir:", "needs a path"),
    ("dir:/definitely/not/here", "path not found"),
    ("jsonl:/definitely/not/here.jsonl#text", "path not found"),
    ("stdlib:/definitely/not/here", "not found"),
])
def test_bad_specs_are_user_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        open_reader(spec)


def test_dir_spec_on_a_file_is_a_user_error(tmp_path: Path) -> None:
    path = write(tmp_path / "f.txt", "x")
    with pytest.raises(UserError, match="not a directory"):
        DirReader(f"dir:{path}", str(path))
    assert isinstance(open_reader("stdlib:"), StdlibReader)


def test_any_cut_into_runs_of_segments_reads_the_stream(tmp_path: Path) -> None:
    # What a map over pods relies on: runs of segments, read one after another, give exactly the
    # candidates of stream(None), wherever the cuts fall (gzip lines and a broken-off file too)
    import gzip

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longalign.sourcing.readers import open_reader

    (tmp_path / "j").mkdir()
    write(tmp_path / "j" / "a.jsonl", "\n".join(json.dumps({"text": f"plain {i}"}) for i in range(5))
          + "\n\n{bad\n")
    with gzip.open(tmp_path / "j" / "b.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps({"text": f"zipped {i}"}) + "\n" for i in range(4)))
    whole = gzip.compress("".join(json.dumps({"text": f"cut {i} " + "x" * 200}) + "\n"
                                  for i in range(8)).encode())
    (tmp_path / "j" / "c.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(7)]}), tmp_path / "p" / "a.parquet",
                   row_group_size=2)
    for k, rows in enumerate((3, 1, 4, 2)):  # a folder of data files, streamed by datasets
        write(tmp_path / "h" / f"part-{k}.jsonl",
              "".join(json.dumps({"text": f"file {k} row {i}"}) + "\n" for i in range(rows)))
    rng = np.random.default_rng(0)
    for spec in (f"jsonl:{tmp_path / 'j'}", f"parquet:{tmp_path / 'p'}", f"hf:{tmp_path / 'h'}"):
        reader = open_reader(spec)
        reader.index()
        expected = list(reader.stream(None))
        n = reader.segments()
        assert n > 3 and len(expected) > 4  # the hf folder: one segment per data file
        if spec.startswith("hf:"):  # its shards in order are the library's own stream
            assert [c[0].data for c in expected] == [row["text"] for row in reader.dataset]
        for _ in range(6):
            cuts = sorted({0, n, *rng.integers(0, n + 1, size=3).tolist()})
            got = [c for a, b in zip(cuts, cuts[1:]) for c in reader.read_segments(a, b)]
            assert got == expected, (spec, cuts)
        assert [c for s in range(n) for c in reader.read_segment(s)] == expected
