"""Quality filters, near-duplicate removal, mix ratios, per-source ranges, determinism and
restart safety of the whole stage (tokenizer of embedded:tiny, corpora made here)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.sourcing import source
from longalign.sourcing.neardup import NearDuplicates, shingle_hashes, word_hashes
from longalign.sourcing.quality import quality_issue, repeated_line_fraction
from longalign.formats import CORPUS, Shards, ShardWriter

MODEL = "embedded:tiny"
VOCAB = [w for w in (
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government "
    "number night point home water room mother area money story fact month lot right study book "
    "eye job word business issue side kind head house service friend father power hour game line "
    "end member law car city community name president team minute idea kid body information back "
    "parent face others level office door health person art war history party result change morning "
    "reason research girl guy moment air teacher force education river garden letter window bridge"
).split()]


def prose(rng: np.random.Generator, words: int, paragraph: int = 60) -> str:
    """Seeded random prose: sentences of 8-15 words, paragraphs of about ``paragraph`` words."""
    out, para, count = [], [], 0
    while count < words:
        n = int(rng.integers(8, 16))
        sentence = " ".join(VOCAB[int(i)] for i in rng.integers(0, len(VOCAB), n))
        para.append(sentence.capitalize() + ".")
        count += n
        if sum(len(s.split()) for s in para) >= paragraph:
            out.append(" ".join(para))
            para = []
    if para:
        out.append(" ".join(para))
    return "\n\n".join(out) + "\n"


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data, encoding="utf-8")
    return path


def rows(output: Path) -> list[dict]:
    return Shards(CORPUS, output).read_table().to_pylist()


# ---------------------------------------------------------------- quality filters (unit)

def test_quality_filters_flag_each_kind_of_junk() -> None:
    rng = np.random.default_rng(0)
    good = prose(rng, 400)
    assert quality_issue(good, 0.25, 0.5, 0.5) is None
    numbers = "\n".join(" ".join(str(int(x)) for x in rng.integers(0, 10**6, 12)) for _ in range(50))
    assert quality_issue(numbers, 0.25, 0.5, 0.5)[0] == "non_text"
    assert quality_issue(numbers, 0.0, 0.5, 1.0) is None  # switched off
    blob = "data: " + "QUJDRA" * 2000 + "\n" + good[:500]
    reason, detail = quality_issue(blob, 0.25, 0.5, 0.5)
    assert reason == "non_text" and "100+" in detail
    log = "\n".join(["ERROR connection refused on port 8080"] * 40 + [good[:300]])
    assert repeated_line_fraction(log) > 0.8
    assert quality_issue(log, 0.25, 0.5, 0.5)[0] == "repeated_lines"
    assert repeated_line_fraction("a\n\n\nb\n\nc\n") == 0.0  # blank lines do not count


# ---------------------------------------------------------------- near duplicates (unit)

def test_word_hashes_are_case_insensitive_and_split_on_punctuation() -> None:
    a, b = word_hashes("Hello, World! hello_world caf\u00e9"), word_hashes("hello world HELLO_WORLD caf\u00e9")
    assert list(a) == list(b) and len(a) == 4
    assert len(set(word_hashes("one two three").tolist())) == 3
    assert len(shingle_hashes("", 5)) == 0


def test_word_characters_are_ascii_letters_digits_underscore_and_non_ascii() -> None:
    def words(text: str) -> int:
        return len(word_hashes(text))

    assert words("0 9 a z _ \u00e9") == 6  # each one word: the edges of every class
    assert words("0a9z_\u00e9") == 1
    assert words("\u0440") == words("x\u0440y") == 1  # UTF-8 d1 80: the byte 0x80 is a word byte too
    assert words("a/b:c`d{e^f@g[h") == 8  # the characters next to each class split words
    assert words("bad \ud800 text") == 2  # a lone surrogate (undecodable input) is replaced, not fatal


def test_long_documents_are_signed_in_chunks_like_in_one_batch() -> None:
    """A document with more shingles than one update takes (CHUNK) gets the signature datasketch
    gives for all its shingles at once."""
    from datasketch import MinHash

    from longalign.sourcing.neardup import CHUNK

    text = " ".join(f"w{i}" for i in range(10 * CHUNK))  # about one shingle in 4 is kept
    shingles = shingle_hashes(text, 5)
    assert len(shingles) > 2 * CHUNK
    reference = MinHash(num_perm=64, seed=3, hashfunc=int, scheme="affine64")
    reference.update_batch(shingles)
    signed = NearDuplicates(0.8, num_perm=64, seed=3).signature(text)
    assert list(signed.hashvalues) == list(reference.hashvalues)
    short = "only a few words here to be shingled in one small batch of them"  # every shingle counts
    reference = MinHash(num_perm=64, seed=3, hashfunc=int, scheme="affine64")
    reference.update_batch(shingle_hashes(short, 5))
    assert list(NearDuplicates(0.8, num_perm=64, seed=3).signature(short).hashvalues) == list(reference.hashvalues)


def test_shingles_are_distinct_per_word_sequence_and_sampled_at_the_given_rate() -> None:
    """Each run of n words gets its own 64-bit hash (no collisions among 40,000 distinct ones),
    and sampling keeps about one shingle in ``sample``, the same ones in every document."""
    text = " ".join(f"w{i}" for i in range(40_000))
    every = shingle_hashes(text, 5, sample=1)
    assert len(every) == 40_000 - 4
    for sample in (2, 4):
        kept = shingle_hashes(text, 5, sample=sample)
        assert abs(len(kept) / len(every) - 1 / sample) < 0.02
        assert set(kept.tolist()) <= set(every.tolist())
    assert len(shingle_hashes("w1 w2 w3", 5, sample=1)) == 1  # a text shorter than n: one shingle


def test_a_signature_computed_by_a_map_worker_decides_like_the_text() -> None:
    """The parallel map step sends the signature's hash values instead of the text; the index
    must decide on those values (the text is not looked at again)."""
    rng = np.random.default_rng(4)
    original, other = prose(rng, 2000), prose(rng, 2000)
    worker = NearDuplicates(0.8)  # the same settings in another process
    index = NearDuplicates(0.8)
    assert index.check_and_add(original, "orig", worker.signature(original).hashvalues) is None
    assert index.check_and_add(other, "copy", worker.signature(original).hashvalues) == "orig"
    assert index.check_and_add(original, "other", worker.signature(other).hashvalues) is None
    assert index.count == 2


@pytest.mark.parametrize("num_perm", [128, 64])  # the default and another sourcing.near_dup_num_perm
def test_minhash_lsh_finds_edited_copies_only(num_perm) -> None:
    rng = np.random.default_rng(1)
    original = prose(rng, 3000)
    words = original.split(" ")
    edited = list(words)
    for i in rng.choice(len(words), len(words) // 100, replace=False):  # 1% of words replaced
        edited[int(i)] = "zebra"
    other = prose(rng, 3000)
    index = NearDuplicates(0.8, num_perm=num_perm)
    assert index.check_and_add(original, "orig") is None
    assert index.check_and_add(" ".join(edited), "edit") == "orig"
    assert index.check_and_add(other, "other") is None
    assert index.check_and_add(original.upper(), "upper") == "orig"
    assert index.count == 2
    half = " ".join(words[: len(words) // 2])  # Jaccard about 0.5: not a near duplicate
    assert index.check_and_add(half, "half") is None


# ---------------------------------------------------------------- the stage

def corpus(tmp: Path) -> Path:
    rng = np.random.default_rng(2)
    d = tmp / "in"
    base = prose(rng, 400)
    write(d / "a_base.txt", base)
    words = base.split(" ")
    words[10] = words[50] = "zebra"
    write(d / "b_near_copy.txt", " ".join(words))
    write(d / "c_other.txt", prose(rng, 400))
    write(d / "d_numbers.txt", "\n".join(" ".join(str(int(x)) for x in rng.integers(0, 10**6, 10))
                                          for _ in range(80)))
    write(d / "e_repeated.txt", "\n".join(["the same log line about a failure here"] * 60) + "\n" + prose(rng, 150))
    return d


def test_stage_counts_quality_and_near_duplicate_rejections(tmp_path: Path) -> None:
    d = corpus(tmp_path)
    cfg = SourcingConfig(sources=[f"dir:{d}"], min_tokens=50, max_tokens=5000)
    stats = source(cfg, MODEL, tmp_path / "out")
    assert stats["sources"][f"dir:{d}"]["rejected"] == {"near_duplicate": 1, "non_text": 1, "repeated_lines": 1}
    kept = sorted(Path(r["uri"]).name for r in rows(tmp_path / "out"))
    assert kept == ["a_base.txt", "c_other.txt"]
    near = [e for e in stats["rejection_examples"] if e["reason"] == "near_duplicate"]
    assert Path(near[0]["uri"]).name == "b_near_copy.txt"
    base_id = next(r["id"] for r in rows(tmp_path / "out") if r["uri"].endswith("a_base.txt"))
    assert base_id.split("-")[0] in near[0]["detail"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "near_duplicate" in summary and "repeated_lines" in summary
    off = cfg.model_copy(update={"near_dup_threshold": None, "min_alpha_fraction": 0.0,
                                 "max_repeated_line_fraction": 1.0})
    source(off, MODEL, tmp_path / "off")
    assert len({r["uri"] for r in rows(tmp_path / "off")}) == 5


def mix_corpus(tmp: Path) -> list[str]:
    rng = np.random.default_rng(3)
    for i in range(40):
        write(tmp / "code" / f"m{i:02d}.py", f"# module {i}\n" + prose(rng, int(rng.integers(150, 300))))
    for i in range(8):
        write(tmp / "books" / f"b{i}.txt", prose(rng, int(rng.integers(200, 350))))
    lines = [json.dumps({"text": prose(rng, int(rng.integers(20, 40)))}) for _ in range(150)]
    write(tmp / "short.jsonl", "\n".join(lines) + "\n")
    return [f"dir:{tmp / 'code'}?group=code", f"dir:{tmp / 'books'}?group=books",
            f"jsonl:{tmp / 'short.jsonl'}?group=short&min_tokens=10&max_tokens=100"]


@pytest.mark.parametrize("unit", ["tokens", "documents"])
def test_mix_ratios_are_met_and_stop_when_a_group_runs_out(tmp_path: Path, unit: str) -> None:
    specs = mix_corpus(tmp_path)
    shares = {"code": 0.3, "books": 0.3, "short": 0.4}
    cfg = SourcingConfig(sources=specs, min_tokens=150, max_tokens=2000, mix=shares, mix_unit=unit, seed=4)
    stats = source(cfg, MODEL, tmp_path / "out")
    kept = rows(tmp_path / "out")
    group = {s: s.split("group=")[1].split("&")[0] for s in specs}
    amount: Counter = Counter()
    for r in kept:
        amount[group[r["source"]]] += r["n_tokens"] if unit == "tokens" else 1
    total = sum(amount.values())
    largest = max(r["n_tokens"] for r in kept) if unit == "tokens" else 1
    for g, share in shares.items():
        assert abs(amount[g] / total - share) <= 1.5 * largest / total, (g, amount)
    mix = stats["selection"]["mix"]
    assert mix["actual"] == pytest.approx({g: amount[g] / total for g in shares})
    assert stats["selection"]["stopped_by"] == "mix: group 'books' has no documents left"
    assert all(10 <= r["n_tokens"] <= 100 for r in kept if group[r["source"]] == "short")
    assert all(150 <= r["n_tokens"] for r in kept if group[r["source"]] != "short")
    assert "## Mix" in (tmp_path / "out" / "summary.md").read_text()


def test_same_seed_same_bytes_other_seed_other_sample(tmp_path: Path) -> None:
    specs = mix_corpus(tmp_path)
    cfg = SourcingConfig(sources=specs, min_tokens=150, max_tokens=2000, seed=9,
                         mix={"code": 0.5, "books": 0.2, "short": 0.3})
    source(cfg, MODEL, tmp_path / "a")
    source(cfg, MODEL, tmp_path / "b")
    source(cfg.model_copy(update={"seed": 10}), MODEL, tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [r["id"] for r in rows(tmp_path / "a")] != [r["id"] for r in rows(tmp_path / "c")]
    capped = SourcingConfig(sources=specs[:2], min_tokens=150, max_tokens=2000, max_documents=20, seed=1)
    first = source(capped, MODEL, tmp_path / "d")
    source(capped, MODEL, tmp_path / "e")
    assert [r["id"] for r in rows(tmp_path / "d")] == [r["id"] for r in rows(tmp_path / "e")]
    assert first["selection"]["stopped_by"] == "max_documents"
    assert {r["source"] for r in rows(tmp_path / "d")} == set(specs[:2])  # both sources sampled


def test_mix_groups_must_match_the_sources(tmp_path: Path) -> None:
    specs = mix_corpus(tmp_path)
    with pytest.raises(UserError, match="no share for source group"):
        source(SourcingConfig(sources=specs, mix={"code": 1.0, "books": 1.0}), MODEL, tmp_path / "o")
    with pytest.raises(UserError, match="that no source has"):
        source(SourcingConfig(sources=specs, mix={"code": 1, "books": 1, "short": 1, "web": 1}),
               MODEL, tmp_path / "o")
    with pytest.raises(ValueError, match="share must be > 0"):
        SourcingConfig(sources=specs, mix={"code": 0.0})
    assert not (tmp_path / "o").exists()


def test_corrupt_input_counted_or_fatal_in_strict_mode(tmp_path: Path) -> None:
    import gzip

    rng = np.random.default_rng(5)
    write(tmp_path / "in" / "good.txt", prose(rng, 300))
    (tmp_path / "in" / "bad.txt.gz").write_bytes(gzip.compress(b"x" * 1000)[:20])
    cut = (prose(rng, 100) + "price in \u20ac").encode("utf-8")[:-1]  # truncated inside a character
    (tmp_path / "in" / "cut.txt").write_bytes(cut)
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=50, max_tokens=5000)
    stats = source(cfg, MODEL, tmp_path / "out")
    assert stats["rejected"] == {"corrupt": 1, "undecodable": 1} and stats["documents_kept"] == 1
    with pytest.raises(UserError, match="corrupt"):
        source(cfg.model_copy(update={"strict": True}), MODEL, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()


def test_run_killed_midway_leaves_nothing_and_rerun_matches(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(6)
    for i in range(6):
        write(tmp_path / "in" / f"d{i}.txt", prose(rng, 300))
    cfg = SourcingConfig(sources=[f"dir:{tmp_path / 'in'}"], min_tokens=50, max_tokens=5000)
    source(cfg, MODEL, tmp_path / "clean")
    original = ShardWriter.add
    calls = {"n": 0}

    def dying_add(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run is killed while writing
        original(self, row)

    monkeypatch.setattr(ShardWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        source(cfg, MODEL, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(ShardWriter, "add", original)
    source(cfg, MODEL, tmp_path / "out")
    for name in sorted(p.name for p in (tmp_path / "clean").iterdir()):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_all_readers_in_one_run(tmp_path: Path) -> None:
    """Every scheme feeds the same run; rows carry the documented schema."""
    import shutil
    import subprocess

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    write(tmp_path / "dir" / "a.txt", prose(rng, 200))
    write(tmp_path / "rows.jsonl", json.dumps({"text": prose(rng, 200), "title": "t"}) + "\n")
    pq.write_table(pa.table({"body": [prose(rng, 200)]}), tmp_path / "rows.parquet")
    datasets.Dataset.from_dict({"text": [prose(rng, 200)]}).save_to_disk(str(tmp_path / "hf"))
    write(tmp_path / "repo" / "main.py", "# main\n" + prose(rng, 200))
    if shutil.which("git"):
        subprocess.run(["git", "-C", str(tmp_path / "repo"), "init", "-q"], check=True)
        subprocess.run(["git", "-C", str(tmp_path / "repo"), "add", "-A"], check=True)
    specs = [f"dir:{tmp_path / 'dir'}", f"jsonl:{tmp_path / 'rows.jsonl'}",
             f"parquet:{tmp_path / 'rows.parquet'}#body", f"hf:{tmp_path / 'hf'}", f"git:{tmp_path / 'repo'}"]
    stats = source(SourcingConfig(sources=specs, min_tokens=50, max_tokens=5000), MODEL, tmp_path / "out")
    kept = rows(tmp_path / "out")
    assert sorted(r["source"] for r in kept) == sorted(specs)
    assert all(stats["sources"][s]["kept"] == 1 for s in specs)
    assert set(kept[0]) == {"id", "source", "uri", "text", "n_tokens", "content_hash", "language", "metadata"}
    git_row = next(r for r in kept if r["source"].startswith("git:"))
    assert git_row["text"].startswith("# ===== file: main.py =====") and git_row["language"] == "python"
