"""The whole sourcing stage on small corpora the tests create (tokenizer of embedded:tiny)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sourcing_helpers import write

from longalign.results import StageResult
from longalign.config import SourcingConfig, load_run_config
from longalign.errors import UserError
from longalign.models import load_tokenizer
from longalign.sourcing import source
from longalign.sourcing.readers import DirReader
from longalign.sourcing.text import TokenCounter, sha256_hex
from longalign.formats import CORPUS, Shards, ShardWriter

MODEL = "embedded:tiny"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(load_tokenizer(MODEL))


def doc(tag: str, paragraphs: int) -> str:
    """A text of ``paragraphs`` paragraphs of roughly 45 tokens each, unique per ``tag``."""
    return "\n\n".join(f"Paragraph {tag}-{i}. {SENTENCE * 3}".rstrip() for i in range(paragraphs)) + "\n"


def rows(output: Path) -> list[dict]:
    return Shards(CORPUS, output).read_table().to_pylist()


@pytest.fixture
def messy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory and a JSONL file with every kind of bad input next to good documents."""
    d = tmp_path / "in"
    write(d / "good1.txt", doc("one", 8))
    write(d / "good2.md", "# Title\n\n" + doc("two", 6))
    write(d / "copy_of_good1.txt", doc("one", 8))
    write(d / "cafe_nfc.txt", "caf\u00e9 " + doc("three", 5))
    write(d / "cafe_nfd.txt", "cafe\u0301 " + doc("three", 5))  # same text after NFC
    write(d / "empty.txt", "  \n\n ")
    write(d / "image.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(d / "latin1.txt", ("na\u00efve " + doc("four", 5)).encode("latin-1"))
    write(d / "short.txt", "Too short.\n")
    write(d / "vanishes.txt", doc("five", 5))
    write(tmp_path / "docs.jsonl", "\n".join([
        json.dumps({"text": doc("six", 5), "title": "six"}),
        "{broken",
        json.dumps({"content": "wrong field"}),
    ]) + "\n")

    original = DirReader.index

    def index_then_delete(self):  # a file listed, then gone before it is read
        errors = original(self)
        (self.root / "vanishes.txt").unlink()
        return errors

    monkeypatch.setattr(DirReader, "index", index_then_delete)
    return tmp_path


def config(tmp: Path, **kw) -> SourcingConfig:
    base = {"sources": [f"dir:{tmp / 'in'}", f"jsonl:{tmp / 'docs.jsonl'}"],
            "min_tokens": 100, "max_tokens": 1000}
    return SourcingConfig(**{**base, **kw})


def test_bad_inputs_are_counted_and_the_run_continues(messy: Path, counter: TokenCounter) -> None:
    out = messy / "out"
    stats = source(config(messy), MODEL, out)
    dir_spec, jsonl_spec = f"dir:{messy / 'in'}", f"jsonl:{messy / 'docs.jsonl'}"
    assert stats["sources"][dir_spec]["rejected"] == {
        "binary": 1, "duplicate": 2, "empty": 1, "too_short": 1, "undecodable": 1, "unreadable": 1}
    assert stats["sources"][jsonl_spec]["rejected"] == {"malformed": 1, "missing_field": 1}
    assert stats["sources"][dir_spec]["read"] == 10 and stats["sources"][jsonl_spec]["read"] == 3
    assert stats["metrics"]["documents_read"] == 13
    assert stats["metrics"]["rejected_total"] == 9
    assert {e["uri"] for e in stats["rejection_examples"] if e["reason"] == "malformed"} == {
        f"{messy / 'docs.jsonl'}:2"}

    table = Shards(CORPUS, out).read_table()
    assert table.schema.equals(CORPUS.schema, check_metadata=True)
    kept = table.to_pylist()
    # Sorted order: the first of two equal texts is kept, the later one is the duplicate.
    assert sorted(Path(r["uri"]).name for r in kept) == [
        "cafe_nfc.txt", "copy_of_good1.txt", "docs.jsonl:1", "good2.md"]
    assert sorted(Path(e["uri"]).name for e in stats["rejection_examples"]
                  if e["reason"] == "duplicate") == ["cafe_nfd.txt", "good1.txt"]
    assert stats["documents_kept"] == stats["metrics"]["documents_kept"] == 4
    assert len({r["id"] for r in kept}) == 4
    for r in kept:
        assert r["content_hash"] == sha256_hex(r["text"])
        assert r["n_tokens"] == counter.count([r["text"]])[0]
        assert 100 <= r["n_tokens"] <= 1000
        assert isinstance(json.loads(r["metadata"]), dict)
    by_name = {Path(r["uri"]).name: r for r in kept}
    assert by_name["docs.jsonl:1"]["source"] == jsonl_spec
    assert json.loads(by_name["docs.jsonl:1"]["metadata"]) == {"title": "six"}
    assert by_name["good2.md"]["language"] == "markdown"
    assert by_name["copy_of_good1.txt"]["language"] is None
    assert stats["tokens_kept"] == sum(r["n_tokens"] for r in kept)

    assert json.loads((out / "stats.json").read_text()) == json.loads(json.dumps(stats.stats))
    assert StageResult.load(out).metrics == stats.metrics == stats["metrics"]
    summary = (out / "summary.md").read_text()
    assert "undecodable" in summary and "missing_field" in summary
    assert (out / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strict_mode_fails_on_first_bad_input(messy: Path) -> None:
    out = messy / "out"
    with pytest.raises(UserError, match="strict"):
        source(config(messy, strict=True), MODEL, out)
    assert not out.exists()


def test_length_filter_without_splitting(tmp_path: Path) -> None:
    write(tmp_path / "in" / "long.txt", doc("long", 40))
    write(tmp_path / "in" / "mid.txt", doc("mid", 10))
    write(tmp_path / "in" / "small.txt", doc("small", 1))
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=200, max_tokens=1000,
                         split_long=False)
    stats = source(cfg, MODEL, tmp_path / "out")
    assert stats["rejected"] == {"too_long": 1, "too_short": 1}
    assert [Path(r["uri"]).name for r in rows(tmp_path / "out")] == ["mid.txt"]


def test_split_long_documents_into_pieces_within_range(tmp_path: Path, counter: TokenCounter) -> None:
    original = doc("long", 60)
    write(tmp_path / "in" / "long.txt", original)
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=300, max_tokens=800)
    stats = source(cfg, MODEL, tmp_path / "out")
    pieces = rows(tmp_path / "out")
    total = counter.count([original])[0]
    assert total > 800 and len(pieces) >= 3
    assert stats["split_documents"] == 1 and stats["rejected"] == {}
    parent = sha256_hex(original)
    pos = 0
    for part, r in enumerate(pieces):
        info = json.loads(r["metadata"])["split"]
        assert (info["part"], info["parts"], info["parent_hash"]) == (part, len(pieces), parent)
        assert r["id"] == f"{parent[:16]}-{part}"
        assert 300 <= r["n_tokens"] <= 800
        assert original[info["char_start"]:info["char_end"]] == r["text"]
        assert original[pos:info["char_start"]] == ("" if part == 0 else "\n\n")
        pos = info["char_end"]
    assert original[pos:] == "\n"
    assert "\n\n".join(r["text"] for r in pieces) + "\n" == original


def many_docs(tmp_path: Path) -> Path:
    for i in range(30):
        write(tmp_path / "in" / f"d{i:02d}.txt", doc(f"d{i}", 4 + i % 7))
    return tmp_path / "in"


def test_max_documents_is_deterministic_for_the_seed(tmp_path: Path) -> None:
    folder = many_docs(tmp_path)

    def run(seed: int, name: str) -> tuple[dict, Path]:
        cfg = SourcingConfig(sources=[f"dir:{folder}"], min_tokens=100, max_tokens=1000,
                             max_documents=5, seed=seed)
        return source(cfg, MODEL, tmp_path / name), tmp_path / name

    first, out_a = run(7, "a")
    _, out_b = run(7, "b")
    _, out_c = run(8, "c")
    assert first["documents_kept"] == 5
    assert first["selection"]["stopped_early"] and first["selection"]["candidates_visited"] < 30
    names = sorted(p.name for p in out_a.iterdir())
    assert names == ["documents-00000.parquet", "lengths.png", "result.json", "stats.json", "summary.md"]
    for name in names:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    assert [r["id"] for r in rows(out_a)] != [r["id"] for r in rows(out_c)]


def test_capped_run_takes_a_bounded_share_of_one_split_document(tmp_path: Path) -> None:
    write(tmp_path / "in" / "huge.txt", doc("huge", 200))
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=100, max_tokens=500,
                         max_documents=8)
    stats = source(cfg, MODEL, tmp_path / "out")
    assert stats["documents_kept"] == 2  # max_documents // 4 pieces of one document
    counts = stats["sources"][cfg.sources[0]]
    assert counts["pieces"] > 2 and counts["unused_after_cap"] == counts["pieces"] - 2


def test_missing_path_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out"
    cfg = SourcingConfig(sources=["stdlib:", f"dir:{tmp_path / 'nope'}"])
    with pytest.raises(UserError, match="path not found"):
        source(cfg, MODEL, out)
    assert not (tmp_path / "sub").exists()


def test_no_document_kept_is_a_user_error_after_counting(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.txt", "short one\n")
    write(tmp_path / "in" / "b.txt", "")
    out = tmp_path / "out"
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=100, max_tokens=1000)
    with pytest.raises(UserError, match=r"no documents kept from 2 read \(rejected: empty 1, too_short 1\)"):
        source(cfg, MODEL, out)
    # no corpus, only the report of what was rejected and why
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "stats.json", "summary.md"]
    assert json.loads((out / "stats.json").read_text())["rejected"] == {"empty": 1, "too_short": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_shards_roll_over_by_rows_and_bytes(tmp_path: Path) -> None:
    writer = ShardWriter(CORPUS, tmp_path, max_rows=2, max_bytes=10, size=lambda r: len(r["text"]))
    for i, text in enumerate(["abc", "def", "ghijklmnopq", "r"]):
        writer.add({"id": str(i), "source": "s", "uri": "u", "text": text, "n_tokens": 1,
                    "content_hash": "h", "language": None, "metadata": "{}"})
    writer.flush()
    assert writer.shards == ["documents-00000.parquet", "documents-00001.parquet",
                             "documents-00002.parquet"]
    assert [pq.read_table(tmp_path / s).num_rows for s in writer.shards] == [2, 1, 1]
    assert Shards(CORPUS, tmp_path).read_table().column("id").to_pylist() == ["0", "1", "2", "3"]
    assert pq.read_table(tmp_path / writer.shards[0]).schema.field("language").type == pa.string()


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_presets_on_the_standard_library(tmp_path: Path, preset: str) -> None:
    cfg = load_run_config(preset).sourcing
    start = time.monotonic()
    stats = source(cfg, MODEL, tmp_path / "out")
    assert time.monotonic() - start < 30
    kept = rows(tmp_path / "out")
    assert len(kept) == cfg.max_documents == stats["metrics"]["documents_kept"]
    assert all(cfg.min_tokens <= r["n_tokens"] <= cfg.max_tokens for r in kept)
    assert all(r["source"] == "stdlib:" and r["language"] == "python" for r in kept)
    assert all(r["text"].startswith("# ===== file: ") for r in kept if '"part": 0' in r["metadata"]
               or '"split"' not in r["metadata"])
    assert len({r["uri"] for r in kept}) >= cfg.max_documents // 2
