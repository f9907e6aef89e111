"""The question parser on messy teacher replies."""

from longalign.generation.parsing import parse_questions


def test_mixed_styles_preamble_and_chatter():
    reply = (
        "Sure! Here are five questions about the text:\n\n"
        "1. What is the role of the council?\n"
        "2) Why did the town grow around the mill?\n"
        "Q3: Which goods were traded?\n"
        "**4.** How often did the council meet?\n"
        "Question 5: Who traded along the northern road?\n\n"
        "I hope these questions help!"
    )
    assert parse_questions(reply) == [
        "What is the role of the council?",
        "Why did the town grow around the mill?",
        "Which goods were traded?",
        "How often did the council meet?",
        "Who traded along the northern road?",
    ]


def test_wrapped_items_and_fewer_items():
    reply = "1. What does the function\n   return when the input is empty?\n2. List the arguments."
    assert parse_questions(reply) == [
        "What does the function return when the input is empty?",
        "List the arguments.",
    ]


def test_items_on_one_line_after_preamble():
    assert parse_questions("Okay. 1. What is A? 2. What is B? 3) Explain C.") == [
        "What is A?", "What is B?", "Explain C."]


def test_numbers_inside_a_question_do_not_split_it():
    assert parse_questions("1. Is version 2. of the tool faster? 2. Why?") == [
        "Is version 2. of the tool faster?", "Why?"]


def test_more_than_five_and_duplicates_are_kept_for_the_gates():
    reply = "\n".join(f"{i}. What is item {i % 3}?" for i in range(1, 8))
    questions = parse_questions(reply)
    assert len(questions) == 7
    assert questions[0] == questions[3] == "What is item 1?"


def test_labels_quotes_and_bullets_are_stripped():
    reply = '- 1. "What is the capital?"\n- 2. Question: How big is it?'
    assert parse_questions(reply) == ["What is the capital?", "How big is it?"]


def test_unnumbered_reply_falls_back_to_question_lines():
    reply = "Here are some ideas.\n- What is A?\n- How does B work?\nThat is all."
    assert parse_questions(reply) == ["What is A?", "How does B work?"]


def test_garbage_gives_nothing():
    assert parse_questions("") == []
    assert parse_questions("lorem ipsum dolor sit amet") == []
    assert parse_questions("1.\n2.\n3.") == []
