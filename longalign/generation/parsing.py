"""Parse the teacher's numbered list of proposed questions.

Teachers rarely follow a format exactly, so the parser tolerates:
- preamble and closing chatter ("Here are five questions:", "I hope this helps");
- item styles ``1.``, ``1)``, ``1:``, ``Q1:``, ``Question 1:``, ``**1.**``, ``- 1.`` and ``(1)``;
- items wrapped over several lines (continuation lines are joined until a blank line or until
  the item ends with a question mark);
- several items on one line (``1. Why? 2. How?``) when the numbers follow each other;
- more or fewer than 5 items; an item cut off by the token limit (dropped by the caller's gates).
When no numbered item is found at all, lines containing a question mark are taken instead.
Duplicates are removed by the caller (it counts them).
"""

from __future__ import annotations

import re

MAX_ITEMS = 10  # a runaway list is cut here

# One numbered item at the start of a line.
_ITEM = re.compile(
    r"""^\s*(?:[-*•>]\s*)?(?:\*\*|__)?\s*
        (?:(?:Q|Question)\s*)?\(?(\d{1,2})\s*(?:[.):]|\s-)\s*(?:\*\*|__)?\s*(.*)$""",
    re.IGNORECASE | re.VERBOSE,
)
# A further numbered item inside a line, after the end of a sentence.
_INLINE = re.compile(r"(?<=[?.!:])\s+(?:(?:Q|Question)\s*)?(\d{1,2})\s*[.)]\s+", re.IGNORECASE)
# A list that starts inside a line of preamble ("Sure! 1. What ...").
_INLINE_FIRST = re.compile(r"(?<=[?.!:])\s+(?:(?:Q|Question)\s*)?1\s*[.)]\s+", re.IGNORECASE)
_LABEL = re.compile(r"^(?:question|q|request)\s*:\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")


def _clean(item: str) -> str:
    item = item.replace("**", "").replace("__", "").strip()
    item = _LABEL.sub("", item)
    item = re.sub(r"\s+", " ", item).strip()
    if len(item) >= 2 and item[0] in "\"'“«" and item[-1] in "\"'”»":
        item = item[1:-1].strip()
    return item


def _split_inline(first_number: int, text: str) -> list[tuple[int, str]]:
    """Split ``"Why? 2. How?"`` into items when the inner numbers continue the sequence."""
    items = [(first_number, text)]
    while True:
        number, rest = items[-1]
        for match in _INLINE.finditer(rest):
            if int(match.group(1)) == number + 1:
                items[-1] = (number, rest[: match.start()])
                items.append((number + 1, rest[match.end():]))
                break
        else:
            return items


def parse_questions(reply: str) -> list[str]:
    """The proposed questions found in a teacher reply, in order (may be empty)."""
    items: list[list] = []  # [number, text, open_for_continuation]
    for line in reply.splitlines():
        match = _ITEM.match(line)
        first = None if match or (items and items[-1][2]) else _INLINE_FIRST.search(line)
        if match and match.group(2).strip():
            for number, text in _split_inline(int(match.group(1)), match.group(2)):
                items.append([number, text, True])
        elif first:
            items.extend([n, text, True] for n, text in _split_inline(1, line[first.end():]))
        elif not line.strip():
            if items:
                items[-1][2] = False  # a blank line closes the current item
        elif items and items[-1][2] and not items[-1][1].rstrip().endswith("?"):
            items[-1][1] += " " + line.strip()  # a wrapped line (a finished question takes none)
    questions = [_clean(text) for _, text, _ in items]
    if not items:  # no numbering at all: take lines that ask something
        questions = [_clean(_BULLET.sub("", line)) for line in reply.splitlines() if "?" in line]
    return [q for q in questions if q][:MAX_ITEMS]
