"""The stage end to end: output files and schema, stats, user errors, determinism."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import longalign.generation.stage as stage
from longalign.results import StageResult
from longalign.config import GenerationConfig
from longalign.errors import UserError
from longalign.generation import generate

SYNTH = GenerationConfig(teacher="synthetic", synthetic_per_document=2, seed=1)


def _rows(out):
    return pq.read_table(out / "samples-00000.parquet").to_pylist()


def test_output_files_schema_and_stats(corpus, tmp_path):
    out = tmp_path / "out"
    stats = generate(SYNTH, corpus, out)
    assert sorted(p.name for p in out.iterdir()) == ["preview.md", "result.json", "samples-00000.parquet",
                                                   "stats.json"]
    table = pq.read_table(out / "samples-00000.parquet")
    assert table.schema.field("messages").type == pa.list_(
        pa.struct([("role", pa.string()), ("content", pa.string())]))
    assert table.schema.field("n_chars").type == pa.int64()
    assert table.column_names == ["id", "messages", "task", "teacher", "doc_id", "reference", "n_chars",
                                  "teacher_prompt_tokens", "teacher_completion_tokens"]
    rows = table.to_pylist()
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    for row in rows:
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert assistant["content"] == row["reference"]
        assert row["n_chars"] == len(user["content"]) + len(assistant["content"])
        assert row["teacher"] == "synthetic"
    assert json.loads((out / "stats.json").read_text()) == stats
    stored = StageResult.load(out)
    assert (stored.stage, stored.metrics, stored.headline) == ("generation", stats.metrics, {"samples": 10})
    assert stored.summary_path == out / "preview.md"
    assert stats["samples"]["by_task"] == {"kv_retrieval": 5, "needle": 5}
    assert stats["documents"]["used"] == 5
    assert all(isinstance(v, (int, float)) for v in stats["metrics"].values())
    preview = (out / "preview.md").read_text()
    assert "kv_retrieval" in preview and "question:" in preview


def test_synthetic_teacher_makes_at_least_one_task_per_document(corpus, tmp_path):
    stats = generate(GenerationConfig(teacher="synthetic", synthetic_per_document=0), corpus, tmp_path / "o")
    assert stats["samples"]["total"] == 5


def test_deterministic_and_independent_of_document_order(tmp_path, corpus_writer, document):
    texts = [document(n) for n in range(4)]
    ids = [f"doc{n}" for n in range(4)]
    a = corpus_writer(tmp_path / "a", texts, ids=ids)
    b = corpus_writer(tmp_path / "b", texts[::-1], ids=ids[::-1])
    generate(SYNTH, a, tmp_path / "oa")
    generate(SYNTH, a, tmp_path / "oa2")
    generate(SYNTH, b, tmp_path / "ob")
    assert _rows(tmp_path / "oa") == _rows(tmp_path / "oa2") == _rows(tmp_path / "ob")
    other = generate(SYNTH.model_copy(update={"seed": 2}), a, tmp_path / "oc")
    assert other["samples"]["total"] == 8
    assert _rows(tmp_path / "oc") != _rows(tmp_path / "oa")


def test_missing_corpus_is_a_user_error_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="corpus not found"):
        generate(SYNTH, tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corpus_without_shards_or_columns(tmp_path, corpus_writer):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="documents-"):
        generate(SYNTH, tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), bad / "documents-00000.parquet")
    with pytest.raises(UserError, match="lacks column"):
        generate(SYNTH, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_rows_are_counted(tmp_path, corpus_writer, document):
    corpus = corpus_writer(tmp_path / "c", [document(1), "   ", document(2), document(3)],
                           ids=["a", "b", "c", "a"])
    stats = generate(SYNTH, corpus, tmp_path / "out")
    assert stats["rejects"]["empty_document"] == 1
    assert stats["rejects"]["duplicate_doc_id"] == 1
    assert stats["documents"] == {"rows": 4, "valid": 2, "teacher": 0, "used": 2}


def test_existing_output_needs_overwrite(corpus, tmp_path):
    out = tmp_path / "out"
    generate(SYNTH, corpus, out)
    with pytest.raises(UserError, match="overwrite"):
        generate(SYNTH, corpus, out)
    generate(SYNTH, corpus, out, overwrite=True)


def test_zero_samples_is_a_user_error_with_reasons(corpus, tmp_path, monkeypatch, scripted_teacher):
    monkeypatch.setattr(stage, "make_teacher", lambda *args, **kwargs: scripted_teacher(lambda p: "no list"))
    config = GenerationConfig(teacher="local", teacher_documents=None, synthetic_per_document=0)
    with pytest.raises(UserError, match="no teacher sample came out of 5 documents.*no_question=5"):
        generate(config, corpus, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written; the journal keeps the replies


def test_local_mode_mixes_teacher_and_synthetic_samples(corpus, tmp_path, monkeypatch, scripted_teacher):
    def reply(prompt):
        if "Question:" in prompt:
            return "The council met to discuss taxes."
        return "1. Why did the council meet?\n2. What did the merchants trade?"

    teacher = scripted_teacher(reply)
    monkeypatch.setattr(stage, "make_teacher", lambda *args, **kwargs: teacher)
    config = GenerationConfig(teacher="local", teacher_documents=2, synthetic_per_document=1)
    stats = generate(config, corpus, tmp_path / "out")
    assert stats["documents"]["teacher"] == 2
    assert stats["samples"]["by_teacher"] == {"scripted": 2, "synthetic": 5}
    assert stats["teacher_usage"]["calls"] == 4
    rows = _rows(tmp_path / "out")
    teacher_rows = [r for r in rows if r["teacher"] == "scripted"]
    assert all(r["reference"] is None and r["task"] in {"general", "summary", "reasoning", "extraction"}
               for r in teacher_rows)
    # The same question is never picked for two documents.
    assert sorted(r["messages"][0]["content"].rsplit("\n\n", 1)[1] for r in teacher_rows) == [
        "What did the merchants trade?", "Why did the council meet?"]
    assert all(r["teacher_completion_tokens"] == 6 and r["teacher_prompt_tokens"] > 0 for r in teacher_rows)


def test_large_output_is_sharded(corpus, tmp_path, monkeypatch):
    import longalign.generation.samples as samples
    from longalign.formats import CHATS, Shards

    monkeypatch.setattr(samples, "SHARD_ROWS", 4)
    stats = generate(SYNTH, corpus, tmp_path / "out")
    assert stats["files"] == ["samples-00000.parquet", "samples-00001.parquet", "samples-00002.parquet"]
    table = Shards(CHATS, tmp_path / "out").read_table()
    assert table.num_rows == 10 and len(set(table.column("id").to_pylist())) == 10


def test_local_teacher_replies_are_journaled_and_reused(corpus, tmp_path, monkeypatch, scripted_teacher,
                                                        journal_home):
    def reply(prompt):
        return "Taxes." if "Question:" in prompt else "1. Why did the council meet?\n2. What did merchants trade?"

    teachers = [scripted_teacher(reply) for _ in range(3)]
    monkeypatch.setattr(stage, "make_teacher", lambda *args, **kwargs: teachers.pop(0))
    config = GenerationConfig(teacher="local", teacher_documents=2)
    first = generate(config, corpus, tmp_path / "out")
    (journal,) = journal_home.iterdir()
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(r["phase"] for r in records) == ["answers", "answers", "questions", "questions"]
    assert first["journal"]["appended"] == 4 and first["teacher_usage"]["calls"] == 4
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("samples-")] == [
        "preview.md", "stats.json"] or sorted(p.name for p in (tmp_path / "out").iterdir())
    second_teacher = teachers[0]
    again = generate(config, corpus, tmp_path / "out", overwrite=True)
    assert second_teacher.prompts == []  # everything came from the journal
    assert again["teacher_usage"]["cached"] == 4 and again["samples"] == first["samples"]
    other = generate(config.model_copy(update={"work_dir": str(tmp_path / "work")}), corpus, tmp_path / "o2")
    assert other["journal"]["path"].startswith(str(tmp_path / "work"))
    assert len(list((tmp_path / "work").glob("requests-*.jsonl"))) == 1
