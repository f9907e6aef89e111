"""The scoring tests' behaviour of the shared fake OpenAI-compatible server (a real HTTP server on
127.0.0.1, tests/fake_openai_server.py).

Model ``judge`` behaves like a LongBench-Chat judge, keyed on the answer it is asked to rate:
``ANSWER n`` -> a reply mentioning an example's rating first and ending in ``[[n]]``; ``MIRROR`` ->
the score of the first example shown; ``FLAKY`` -> no rating on the first call of a prompt, ``[[6]]``
after; ``NORATING`` -> never a rating; ``RANGE`` -> ``[[11]]``; ``ONE-RUN n`` -> ``[[n]]`` for the
first prompt seen with this answer, no rating for any other (one judge run of two stays unjudged);
``RATE429`` -> HTTP 429 once, then ``[[4]]``; LongAlign's needle judge prompt -> ``[[2]]`` first. Any other model is a served model under test: it
answers ``tail:`` plus the last 40 characters of the user message, or nothing when the user message contains ``SAY-NOTHING``.
"""

import json
import os
import re
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAI as Server

# The benchmark's own judge files (Apache-2.0, THUDM/LongAlign at the pinned commit) sit beside the
# project in ../shared; LONGALIGN_TEST_LBC_DIR points elsewhere (or nowhere, to test the fallback).
SHARED = Path(os.environ.get("LONGALIGN_TEST_LBC_DIR")
              or Path(__file__).resolve().parents[3] / "shared" / "data" / "longbench_chat")
KEY = "sk-test-NEVER-LOG-THIS-4f1c"
ANSWER_START, ANSWER_END = "[Assistant's answer begins]\n", "\n[Assistant's answer ends]"


def rated(prompt: str) -> str | None:
    """The answer a LongBench-Chat judge prompt asks to rate (None for any other prompt)."""
    if ANSWER_START not in prompt:
        return None
    return prompt.rsplit(ANSWER_START, 1)[1].split(ANSWER_END)[0]


class FakeOpenAI:
    """The shared server with the judge and served-model behaviour above; ``requests`` are the
    request bodies and ``auth`` their Authorization headers, in arrival order."""

    def __init__(self):
        self.key = KEY
        self.first: dict[str, str] = {}
        self.server = Server(respond=self.respond, fault_for=self.fault, api_key=KEY,
                             retry_after="0").__enter__()
        self.url = self.server.url

    @property
    def requests(self) -> list[dict]:
        return [r.body for r in self.server.records]

    @property
    def auth(self) -> list[str]:
        return [r.authorization for r in self.server.records]

    def fault(self, messages: list[dict], seen: int) -> str | None:
        return "429" if rated(messages[-1]["content"]) == "RATE429" and seen == 0 else None

    def respond(self, body: dict, seen: int) -> str:
        prompt = body["messages"][-1]["content"]
        if body["model"] == "judge":
            return self.judge(prompt, seen + 1)
        return "" if "SAY-NOTHING" in prompt else "tail:" + prompt[-40:]

    def judge(self, prompt: str, count: int) -> str:
        if "[The Start of Assistant's Answer]\n" in prompt:  # LongAlign's needle judge prompt
            return "The answer does not give the sentence. Rating: [[2]], not [[9]]"
        answer = rated(prompt)
        if answer.startswith("ANSWER "):
            return f"The second example earned [[3]]; this one is better.\n\nRating: [[{answer.split()[1]}]]"
        if answer == "MIRROR":
            first = re.search(r"Rating: \[\[(\d+)\]\]", prompt).group(1)
            return f"Like the first example: [[{first}]]"
        if answer == "FLAKY":
            return "I think it is decent." if count == 1 else "[[6]]"
        if answer == "NORATING":
            return "I refuse to give a number. [[rating]]"
        if answer == "RANGE":
            return "Outstanding! [[11]]"
        if answer.startswith("ONE-RUN "):  # rates only the first prompt it sees for this answer
            first = self.first.setdefault(answer, prompt)
            return f"[[{answer.split()[1]}]]" if prompt == first else "No verdict this time."
        return "[[4]]" if answer == "RATE429" else "[[5]]"

    def judge_requests(self) -> list[dict]:
        return [r for r in self.requests if r["model"] == "judge"]

    def close(self):
        self.server.__exit__(None, None, None)


@pytest.fixture
def fake_openai(monkeypatch):
    monkeypatch.setenv("LONGALIGN_TEST_KEY", KEY)
    server = FakeOpenAI()
    yield server
    server.close()


def write_stand_in_judge_files(folder: Path) -> Path:
    """Judge files of the benchmark's shape (a 9-slot template ending in "Rating: ", 50 x 3 scored
    examples) in our own words, for checkouts without ../shared: every test of the protocol runs,
    only the checks against the real files' text and digests need the real files."""
    folder.mkdir(parents=True, exist_ok=True)
    answer = "[Assistant's answer begins]\n{}\n[Assistant's answer ends]\n"  # what the fake judge reads
    template = ("Judge how well the answer below responds to a question about a long text.\n\n"
                "Question:\n{}\n\nReference:\n{}\n\nScored examples:\n\n"
                + (answer + "\nRating: [[{}]]\n\n") * 3
                + "Now the answer to judge:\n\n" + answer + "\nRating: ")
    (folder / "prompt_fs.txt").write_text(template, encoding="utf-8")
    shots = [[{"answer": f"Example answer {k} for question {i + 1}.", "score": 2 + 3 * k + i % 2}
              for k in range(3)] for i in range(50)]
    (folder / "few_shots.json").write_text(json.dumps(shots), encoding="utf-8")
    return folder


@pytest.fixture
def real_lbc():
    """The benchmark's real judge files; tests of their exact text and digests skip without them."""
    if not (SHARED / "few_shots.json").is_file():
        pytest.skip(f"the real LongBench-Chat judge files are not at {SHARED}")
    return SHARED


@pytest.fixture
def shared_lbc(tmp_path_factory):
    """The real judge files when present, else stand-ins of the same shape."""
    if (SHARED / "few_shots.json").is_file():
        return SHARED
    return write_stand_in_judge_files(tmp_path_factory.mktemp("lbc"))
