"""Prompt templates ship with the package and are filled safely."""

from longalign.generation.prompts import TASK_TYPES, answer_prompt, question_prompt
from longalign.generation.selfinstruct import choose_task


def test_every_task_type_has_a_template_with_the_document_first():
    for task in TASK_TYPES:
        (message,) = question_prompt(task, "DOC-TEXT")
        assert message["role"] == "user"
        assert message["content"].startswith("DOC-TEXT")
        assert "5" in message["content"] and "{" not in message["content"]


def test_question_prompts_carry_longalign_instructions_and_nothing_that_shortens():
    """LongAlign's four task prompts (paper, appendix A) in substance: 5 English questions, diverse,
    covering all parts of the text, in the "1: " format; summary = summarizing or integrating several
    parts; reasoning = multi-hop; extraction = information-seeking. No request for short questions
    or concise answers (our old additions, which made the data shorter and easier)."""
    texts = {task: question_prompt(task, "DOC")[0]["content"] for task in TASK_TYPES}
    for task, text in texts.items():
        lower = text.lower()
        assert "5 " in text and "english" in lower and '"1: ...", "2: ..."' in text, task
        assert "differ from one another" in lower and "cover every part of the text" in lower, task
        assert "middle" in lower, task
    assert "several of its parts" in texts["summary"] and "summariz" in texts["summary"]
    assert "multi-hop reasoning" in texts["reasoning"] and "information-seeking" in texts["extraction"]
    answer = answer_prompt("DOC", "Why?")[0]["content"]
    for text in [*texts.values(), answer]:
        assert not any(word in text.lower() for word in ("short", "concise", "brief")), text


def test_braces_in_document_or_question_are_left_alone():
    doc = "def f(): return {document} + {question} + {0}"
    (message,) = answer_prompt(doc, "What does {document} do?")
    assert message["content"].startswith(doc)
    assert message["content"].endswith("Question: What does {document} do?")


def test_task_choice_is_seeded_and_covers_all_types():
    picks = [choose_task(0, f"doc{i}") for i in range(200)]
    assert picks == [choose_task(0, f"doc{i}") for i in range(200)]
    assert set(picks) == set(TASK_TYPES)
    assert picks != [choose_task(1, f"doc{i}") for i in range(200)]


def test_user_templates_override_the_built_in_ones(tmp_path):
    import pytest

    from longalign.errors import UserError
    from longalign.generation.prompts import Prompts

    (tmp_path / "answer.txt").write_text("Q={question}\nDOC={document}\n")
    prompts = Prompts(tmp_path)
    assert prompts.overridden == ["answer"]
    assert prompts.answer_prompt("D", "Why?")[0]["content"] == "Q=Why?\nDOC=D"
    assert prompts.question_prompt("summary", "D") == question_prompt("summary", "D")  # built-in kept
    assert prompts.digest != Prompts().digest
    (tmp_path / "summery.txt").write_text("{document}")
    with pytest.raises(UserError, match="unknown template.*summery.txt"):
        Prompts(tmp_path)
    (tmp_path / "summery.txt").unlink()
    (tmp_path / "general.txt").write_text("Ask five questions.")
    with pytest.raises(UserError, match="lacks \\{document\\}"):
        Prompts(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        Prompts(tmp_path / "nope")


def test_stage_sends_the_user_templates(corpus, tmp_path, monkeypatch, scripted_teacher):
    import longalign.generation.stage as stage
    from longalign.config import GenerationConfig
    from longalign.generation import generate

    folder = tmp_path / "prompts"
    folder.mkdir()
    for task in TASK_TYPES:
        (folder / f"{task}.txt").write_text("MY-QUESTIONS\n{document}")
    (folder / "answer.txt").write_text("MY-ANSWER {question}\n{document}")
    teacher = scripted_teacher(lambda p: "A short answer." if p.startswith("MY-ANSWER") else "1. What is it?")
    monkeypatch.setattr(stage, "make_teacher", lambda *args, **kwargs: teacher)
    config = GenerationConfig(teacher="local", teacher_documents=1, prompts_dir=str(folder))
    stats = generate(config, corpus, tmp_path / "out")
    assert [chat[0]["content"].split()[0] for chat in teacher.prompts] == ["MY-QUESTIONS", "MY-ANSWER"]
    assert stats["prompts"]["overridden"] == ["answer", "extraction", "general", "reasoning", "summary"]
