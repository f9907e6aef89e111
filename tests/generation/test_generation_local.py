"""The local transformers teacher: plumbing with the random tiny model, a real run with SmolLM2."""

import pytest

from longalign.config import GenerationConfig
from longalign.errors import UserError
from longalign.generation import generate
from longalign.generation.interface import TRUNCATION_MARK
from longalign.generation.teachers import LocalTeacher, middle_truncate_offsets


@pytest.fixture(scope="module")
def tiny():
    return LocalTeacher("embedded:tiny")


def test_middle_truncation_keeps_both_ends():
    text = "abcdefghij"
    offsets = [(i, i + 1) for i in range(10)]
    assert middle_truncate_offsets(text, offsets, 10) == (text, False)
    assert middle_truncate_offsets(text, offsets, 4) == ("ab" + TRUNCATION_MARK + "ij", True)


def test_teacher_truncates_in_its_own_tokens(tiny, document):
    text = document(1, paragraphs=40)
    short, cut = tiny.truncate(text, 300)
    assert cut and TRUNCATION_MARK in short
    head, tail = short.split(TRUNCATION_MARK)
    assert text.startswith(head) and text.endswith(tail)
    assert len(tiny._offsets(head)) + len(tiny._offsets(tail)) <= 302  # a boundary may re-merge
    assert tiny.truncate("short text", 300) == ("short text", False)


def test_complete_is_batched_ordered_and_deterministic(tiny):
    chats = [[{"role": "user", "content": "word " * n}] for n in (3, 40, 12)]
    first = tiny.complete(chats, max_new_tokens=5)
    again = tiny.complete(chats, max_new_tokens=5)
    assert first == again
    lengths = [c.prompt_tokens for c in first]
    assert lengths[0] < lengths[2] < lengths[1]  # results come back in prompt order
    assert all(1 <= c.completion_tokens <= 5 for c in first)
    assert all(c.finish_reason in ("stop", "length") for c in first)
    assert tiny.complete([], max_new_tokens=5) == []


def test_batches_respect_size_and_token_budget(tiny):
    old = tiny.batch_size, tiny.batch_tokens
    try:
        tiny.batch_size, tiny.batch_tokens = 2, 100
        batches = tiny._batches([10, 60, 30, 20, 5])
        assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
        assert all(len(b) <= 2 for b in batches)
        assert batches[0] == [1]  # 2 x 60 > 100: the longest prompt runs alone
    finally:
        tiny.batch_size, tiny.batch_tokens = old


def test_stage_with_random_teacher_fails_without_a_teacher_sample(corpus, tmp_path, monkeypatch):
    """A random model writes no usable question: the run fails with the counted reasons and
    writes nothing, instead of a dataset of synthetic samples only."""
    import longalign.generation.stage as stage

    seen = {}
    real = stage.self_instruct

    def spy(documents, teacher, **kw):
        seen["tally"], seen["document_tokens"] = kw["tally"], kw["document_tokens"]
        return real(documents, teacher, **kw)

    monkeypatch.setattr(stage, "self_instruct", spy)
    config = GenerationConfig(teacher="local", teacher_model="embedded:tiny", teacher_documents=2,
                              synthetic_per_document=1, teacher_context_tokens=520, max_new_tokens=6)
    with pytest.raises(UserError, match=r"no teacher sample came out of 2 documents \(rejects: .*no_question=\d"):
        generate(config, corpus, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    tally = seen["tally"]
    assert seen["document_tokens"] == 520 - 6 - stage.PROMPT_RESERVE
    assert tally.usage.calls >= 2 and tally.usage.completion_tokens >= 2
    assert tally.truncated_documents == 2  # each document is longer than the window leaves


@pytest.mark.slow
def test_smollm2_writes_a_real_answer(tmp_path, corpus_writer, document):
    corpus = corpus_writer(tmp_path / "c", [document(1, paragraphs=6)])
    config = GenerationConfig(teacher="local", teacher_model="embedded:smollm2", teacher_documents=1,
                              synthetic_per_document=0, teacher_context_tokens=512, max_new_tokens=64)
    stats = generate(config, corpus, tmp_path / "out")
    import pyarrow.parquet as pq

    (row,) = pq.read_table(tmp_path / "out" / "samples-00000.parquet").to_pylist()
    assert row["teacher"] == "local:embedded:smollm2" and row["reference"] is None
    assert row["messages"][0]["content"].startswith(document(1, paragraphs=6))
    assert len(row["messages"][1]["content"].split()) >= 2
    assert stats["teacher_usage"]["calls"] == 2


def test_the_local_teacher_keeps_its_own_smaller_window(tiny):
    positions = tiny.max_positions
    assert positions and positions < 131072
    assert tiny.window(131072) == (positions, "model positions")  # the config default is cut to the model
    assert tiny.window(positions // 2) == (positions // 2, "config")


@pytest.mark.parametrize("native, dtype, key", [(True, "bfloat16", "|bf16"), (False, "float32", "")])
def test_cpu_bf16_teacher_runs_bf16_only_on_a_native_cpu_and_keys_its_replies_apart(cpu_has, native,
                                                                                     dtype, key):
    cpu_has(amx_bf16=native)
    teacher = LocalTeacher("embedded:tiny", cpu_bf16=True)
    assert str(teacher.model.dtype) == f"torch.{dtype}"
    # bf16 replies differ from fp32 ones: the request journal must not hand one for the other
    assert teacher.fingerprint == "local:embedded:tiny|greedy" + key
    [reply] = teacher.complete([[{"role": "user", "content": "Say something."}]], max_new_tokens=4)
    assert reply.completion_tokens >= 1
