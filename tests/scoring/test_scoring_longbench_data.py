"""LongBench-Chat files: validation of truncated or foreign files, the pinned cache and its checksums."""

import hashlib
import json
import shutil
import urllib.request

import pytest

from longalign.config import LongBenchChatConfig
from longalign.errors import UserError
from longalign.scoring.longbench_data import PINNED_COMMIT, SHA256, load_benchmark


def make_data(folder, shared, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("few_shots.json", "prompt_fs.txt"):
        shutil.copy(shared / name, folder / name)
    cases = [{"idx": i, "prompt": f"Document {i} ... question {i}?", "query": f"Question {i}?",
              "answer": f"Answer {i}."} for i in range(1, n + 1)]
    (folder / "test_cases.json").write_text(json.dumps(cases), encoding="utf-8")
    return folder


def load(folder, **extra):
    return load_benchmark(LongBenchChatConfig(data=str(folder), **extra))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests must not download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_full_size_file_is_not_partial_and_limit_cuts(tmp_path, shared_lbc):
    folder = make_data(tmp_path / "d", shared_lbc, n=50)
    bench = load(folder)
    assert len(bench.questions) == 50 and not bench.info["partial"]
    assert bench.examples[50] == [(e["answer"], e["score"]) for e in
                                  json.loads((shared_lbc / "few_shots.json").read_text())[49]]
    small = load(folder, limit=5)
    assert [q.idx for q in small.questions] == [1, 2, 3, 4, 5] and small.info["partial"]
    assert small.info["questions_in_file"] == 50


def test_truncated_test_file_is_a_user_error(tmp_path, shared_lbc):
    folder = make_data(tmp_path / "d", shared_lbc)
    raw = (folder / "test_cases.json").read_bytes()
    (folder / "test_cases.json").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(UserError, match="not valid JSON"):
        load(folder)


@pytest.mark.parametrize("mutate,message", [
    (lambda cases: cases[1].pop("answer"), "record 1 lacks answer"),
    (lambda cases: cases[0].update(query=""), "record 0 lacks query"),
    (lambda cases: cases[2].update(idx="3"), "record 2 lacks idx"),
    (lambda cases: cases[2].update(idx=1), "idx 1 appears twice"),
    (lambda cases: cases[2].update(idx=51), "idx 51 has no few-shot examples"),
])
def test_bad_records_are_user_errors(tmp_path, shared_lbc, mutate, message):
    folder = make_data(tmp_path / "d", shared_lbc)
    cases = json.loads((folder / "test_cases.json").read_text())
    mutate(cases)
    (folder / "test_cases.json").write_text(json.dumps(cases))
    with pytest.raises(UserError, match=message):
        load(folder)


def test_bad_template_and_examples_are_user_errors(tmp_path, shared_lbc):
    folder = make_data(tmp_path / "d", shared_lbc)
    template = (folder / "prompt_fs.txt").read_text()
    (folder / "prompt_fs.txt").write_text(template.rsplit("{}", 1)[0])  # cut before the last slot
    with pytest.raises(UserError, match="9 '\\{\\}' slots"):
        load(folder)
    shutil.copy(shared_lbc / "prompt_fs.txt", folder / "prompt_fs.txt")
    shots = json.loads((folder / "few_shots.json").read_text())
    shots[4][1]["score"] = 11
    (folder / "few_shots.json").write_text(json.dumps(shots))
    with pytest.raises(UserError, match="entry 4"):
        load(folder)


def test_local_checksum_mismatch_and_missing_files(tmp_path, shared_lbc):
    folder = make_data(tmp_path / "d", shared_lbc)
    digest = hashlib.sha256((folder / "test_cases.json").read_bytes()).hexdigest()
    assert load(folder, test_cases_sha256=digest).info["sha256"]["test_cases.json"] == digest
    with pytest.raises(UserError, match="checksum mismatch"):
        load(folder, test_cases_sha256="0" * 64)
    (folder / "few_shots.json").unlink()
    with pytest.raises(UserError, match="few_shots.json"):
        load(folder)
    with pytest.raises(UserError, match="not found"):
        load(tmp_path / "nowhere")


def test_pinned_files_are_checked_in_the_cache(tmp_path, real_lbc):
    shared_lbc = real_lbc
    cache = tmp_path / "cache"
    pinned = cache / "longbench_chat" / PINNED_COMMIT
    make_data(pinned, shared_lbc)
    config = LongBenchChatConfig(data="pinned", cache_dir=str(cache))
    bench = load_benchmark(config)  # everything cached: no download
    assert bench.info["source"] == "pinned" and bench.info["modified_files"] == []
    assert bench.info["sha256"]["few_shots.json"] == SHA256["few_shots.json"]
    record = pinned / "test_cases.json.sha256"  # first use records the digest ...
    assert record.read_text().strip() == bench.info["sha256"]["test_cases.json"]
    (pinned / "test_cases.json").write_text("[]")  # ... so a changed file is caught later
    with pytest.raises(UserError, match="checksum mismatch for test_cases.json"):
        load_benchmark(config)
    assert not (pinned / "test_cases.json").exists()  # removed: the next run downloads it again
    shots = json.loads((shared_lbc / "few_shots.json").read_text())
    shots[0][0]["score"] = 1 if shots[0][0]["score"] != 1 else 2
    (pinned / "few_shots.json").write_text(json.dumps(shots))
    with pytest.raises(UserError, match="checksum mismatch for few_shots.json"):
        load_benchmark(config)
