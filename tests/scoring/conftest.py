"""A fake OpenAI-compatible server on 127.0.0.1 (a real HTTP server in a thread) for scoring tests.

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
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The benchmark's own judge files (Apache-2.0, THUDM/LongAlign at the pinned commit) sit beside the
# project in ../shared; LONGALIGN_TEST_LBC_DIR points elsewhere (or nowhere, to test the fallback).
SHARED = Path(os.environ.get("LONGALIGN_TEST_LBC_DIR")
              or Path(__file__).resolve().parents[3] / "shared" / "data" / "longbench_chat")
KEY = "sk-test-NEVER-LOG-THIS-4f1c"


class FakeOpenAI:
    def __init__(self):
        self.key = KEY
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.seen: dict[str, int] = {}
        self.first: dict[str, str] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                    owner.auth.append(self.headers.get("Authorization", ""))
                    prompt = body["messages"][-1]["content"]
                    owner.seen[prompt] = owner.seen.get(prompt, 0) + 1
                    count = owner.seen[prompt]
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "no route"}})
                if body["model"] == "judge":
                    status, text = owner.judge(prompt, count)
                    if status != 200:
                        return self._send(status, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                else:
                    text = "" if "SAY-NOTHING" in prompt else "tail:" + prompt[-40:]
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 5,
                              "total_tokens": len(prompt) // 4 + 5}})

            def _send(self, status, data, headers=None):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)  # quick shutdown
        self.thread.start()

    @staticmethod
    def rated(prompt: str) -> str:
        return prompt.rsplit("[Assistant's answer begins]\n", 1)[1].split("\n[Assistant's answer ends]")[0]

    def judge(self, prompt: str, count: int) -> tuple[int, str]:
        if "[The Start of Assistant's Answer]\n" in prompt:  # LongAlign's needle judge prompt
            return 200, "The answer does not give the sentence. Rating: [[2]], not [[9]]"
        answer = self.rated(prompt)
        if answer.startswith("ANSWER "):
            return 200, f"The second example earned [[3]]; this one is better.\n\nRating: [[{answer.split()[1]}]]"
        if answer == "MIRROR":
            first = re.search(r"Rating: \[\[(\d+)\]\]", prompt).group(1)
            return 200, f"Like the first example: [[{first}]]"
        if answer == "FLAKY":
            return 200, ("I think it is decent." if count == 1 else "[[6]]")
        if answer == "NORATING":
            return 200, "I refuse to give a number. [[rating]]"
        if answer == "RANGE":
            return 200, "Outstanding! [[11]]"
        if answer.startswith("ONE-RUN "):  # rates only the first prompt it sees for this answer
            first = self.first.setdefault(answer, prompt)
            return 200, (f"[[{answer.split()[1]}]]" if prompt == first else "No verdict this time.")
        if answer == "RATE429":
            return (429, "") if count == 1 else (200, "[[4]]")
        return 200, "[[5]]"

    def judge_requests(self) -> list[dict]:
        return [r for r in self.requests if r["model"] == "judge"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
