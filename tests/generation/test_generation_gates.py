"""Quality gates: each one drops and counts its reject, in isolation and inside the procedure."""

import pytest

from longalign.generation.gates import check_answer, check_question, dedupe_questions
from longalign.generation.selfinstruct import Tally, self_instruct

DOC = ("The lighthouse keeper logged every ship that passed the northern cape, noting its flag, "
       "its cargo and the hour at which its lantern was first seen from the tower. ") * 4


@pytest.mark.parametrize("question,ok", [
    ("What did the keeper log?", True),
    ("Describe how ships were recorded.", True),
    ("the keeper logged ships ?", True),
    ("Does the text mention cargo", True),
    ("The keeper logged ships.", False),
    ("Introduction", False),
    ("Why?", False),
    ("What " + "very " * 200 + "long?", False),
])
def test_check_question(question, ok):
    assert (check_question(question) is None) is ok


def test_dedupe_ignores_case_spacing_and_final_punctuation():
    kept, removed = dedupe_questions(["What is X?", "what  is x", "What is Y?", "WHAT IS X ?"])
    assert kept == ["What is X?", "What is Y?"] and removed == 2


@pytest.mark.parametrize("answer,reason", [
    ("", "empty_answer"),
    ("  ... ", "empty_answer"),
    ("I cannot answer that from the text.", "refusal"),
    ("As an AI language model, I do not read documents.", "refusal"),
    ("I'm sorry, but the text does not say.", "refusal"),
    (" ".join(DOC.split()[5:45]), "copied_document"),
    ("The keeper logged each ship's flag, cargo and the hour its lantern appeared.", None),
])
def test_check_answer(answer, reason):
    assert check_answer(answer, DOC) == reason


def _run(reply_for_questions, answer, documents, finish_reason="stop", scripted=None):
    def reply(prompt):
        return answer if "Question:" in prompt else reply_for_questions

    teacher = scripted(reply, finish_reason)
    tally = Tally()
    samples = self_instruct(documents, teacher, seed=0, document_tokens=1000, max_new_tokens=50, tally=tally)
    return samples, tally, teacher


@pytest.mark.parametrize("answer,reason", [
    ("", "empty_answer"),
    ("As an AI, I cannot help.", "refusal"),
    (" ".join(DOC.split()[:40]), "copied_document"),
])
def test_each_answer_gate_drops_and_counts(scripted_teacher, answer, reason):
    docs = [("a", DOC), ("b", DOC + " Extra.")]
    questions = "1. What did the keeper log?\n2. Which flags did the keeper note?"
    samples, tally, _ = _run(questions, answer, docs, scripted=scripted_teacher)
    assert samples == []
    assert tally.rejects[reason] == 2
    assert tally.usage.calls == 4  # two proposals, two answers


def test_question_gates_count_and_document_without_question_is_skipped(scripted_teacher):
    reply = "Here you go:\n1. Statement without asking.\n2. Statement without asking.\n3. Heading"
    samples, tally, teacher = _run(reply, "An answer.", [("a", DOC)], scripted=scripted_teacher)
    assert samples == []
    assert tally.rejects["duplicate_question"] == 1
    assert tally.rejects["not_a_question"] == 2
    assert tally.rejects["no_question"] == 1
    assert tally.usage.calls == 1 and len(teacher.prompts) == 1  # no answer was requested


def test_reply_cut_by_token_limit_drops_last_item(scripted_teacher):
    reply = "1. What did the keeper log?\n2. What was noted about the"
    samples, tally, _ = _run(reply, "Flags and cargo.", [("a", DOC)], "length", scripted=scripted_teacher)
    assert tally.rejects["truncated_question"] == 1
    assert [s.question for s in samples] == ["What did the keeper log?"]
    assert tally.answers_cut == 1


def test_good_sample_holds_full_document_and_question(scripted_teacher):
    long_doc = DOC * 30  # longer than the teacher budget: the teacher sees a truncated copy
    samples, tally, teacher = _run("1. What did the keeper log?", "Flags and cargo.", [("a", long_doc)],
                                   scripted=scripted_teacher)
    (sample,) = samples
    assert sample.user == f"{long_doc}\n\nWhat did the keeper log?"
    assert sample.answer == "Flags and cargo." and sample.reference is None
    assert tally.truncated_documents == 1
    assert all(len(chat[-1]["content"]) < len(long_doc) for chat in teacher.prompts)


def test_question_picked_for_an_earlier_document_is_not_picked_again(scripted_teacher):
    docs = [(name, DOC + f" Note {name}.") for name in "abc"]
    questions = "1. What did the keeper log?\n2. Which flags did the keeper note?"
    samples, tally, teacher = _run(questions, "Flags and cargo.", docs, scripted=scripted_teacher)
    assert len(samples) == 2  # two distinct questions for three documents
    assert len({s.question for s in samples}) == 2
    assert tally.rejects["repeated_question"] == 1 + 2  # second document: one; third: both
    assert tally.rejects["no_question"] == 1
    assert len(teacher.prompts) == 3 + 2  # no answer was requested for the third document


def test_content_filtered_proposal_is_counted_and_not_answered(scripted_teacher):
    samples, tally, teacher = _run("", "unused", [("a", DOC)], "content_filter", scripted=scripted_teacher)
    assert samples == [] and tally.rejects["content_filter"] == 1
    assert len(teacher.prompts) == 1
