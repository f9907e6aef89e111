"""The short-task guard: a small held-out set of short chats with exact answers, written for this
project, so that a fine-tune that loses short-task ability shows it beside the long-context suites
(LongAlign reports general short tasks beside the long ones and keeps them flat by mixing short
data into training).

Each chat is one question with an unambiguous short answer; an answer scores 1 when it contains any
of the accepted answers as whole words (matching.exact_match), else 0. Cells are per category.
"""

from __future__ import annotations

from longalign.scoring.cases import Case
from longalign.scoring.chat import count_tokens

SUFFIX = " Answer briefly."
# (category, question, accepted answers)
CHATS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("arithmetic", "What is 7 plus 5?", ("12", "twelve")),
    ("arithmetic", "What is 9 times 3?", ("27", "twenty-seven")),
    ("arithmetic", "What is 100 minus 1?", ("99", "ninety-nine")),
    ("arithmetic", "What is half of 50?", ("25", "twenty-five")),
    ("arithmetic", "How many hours are in a day?", ("24", "twenty-four")),
    ("arithmetic", "How many minutes are in an hour?", ("60", "sixty")),
    ("arithmetic", "How many legs does a spider have?", ("8", "eight")),
    ("facts", "What is the capital of France?", ("Paris",)),
    ("facts", "What is the capital of Japan?", ("Tokyo",)),
    ("facts", "What is the capital of Italy?", ("Rome",)),
    ("facts", "What is the capital of Germany?", ("Berlin",)),
    ("facts", "What is the capital of Egypt?", ("Cairo",)),
    ("facts", "What is the capital of Australia?", ("Canberra",)),
    ("facts", "Which planet is known as the Red Planet?", ("Mars",)),
    ("facts", "What is the largest ocean on Earth?", ("Pacific",)),
    ("facts", "Who wrote the play Romeo and Juliet?", ("Shakespeare",)),
    ("facts", "What is the chemical symbol for gold?", ("Au",)),
    ("facts", "What gas do plants take in from the air to make food?", ("carbon dioxide", "CO2")),
    ("facts", "At how many degrees Celsius does water freeze?", ("0", "zero")),
    ("language", "What is the opposite of hot?", ("cold",)),
    ("language", "What is the plural of mouse?", ("mice",)),
    ("language", "What is the past tense of the verb go?", ("went",)),
    ("language", "Which day of the week comes after Monday?", ("Tuesday",)),
    ("language", "Which month comes after March?", ("April",)),
    ("language", "What color do you get by mixing blue and yellow?", ("green",)),
    ("language", "What is the opposite of up?", ("down",)),
)


def short_cases(tokenizer) -> list[Case]:
    """One case per chat; ``length`` is 0 (these prompts are short by design)."""
    cases = []
    for index, (category, question, accepted) in enumerate(CHATS):
        messages = [{"role": "user", "content": question + SUFFIX}]
        cases.append(Case(suite="short", task=category, length=0, index=index, messages=messages,
                          expected=list(accepted), kind="any",
                          prompt_tokens=count_tokens(tokenizer, messages)))
    return cases
