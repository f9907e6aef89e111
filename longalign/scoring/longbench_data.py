"""LongBench-Chat's files: test_cases.json, few_shots.json and the judge template prompt_fs.txt.

They come from a local directory, or from the pinned commit of THUDM/LongAlign (folder
LongBench_Chat/), downloaded once into the cache and checked against SHA-256 digests. Every file is
validated (a truncated or foreign file is a one-line UserError, never a silently smaller benchmark);
a benchmark with fewer than the 50 published questions is allowed but reported as partial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from longalign.config import LongBenchChatConfig
from longalign.errors import UserError
from longalign.models import cache_root

log = logging.getLogger("longalign")

PINNED_COMMIT = "450ecc8c9faeafd83a169610fad94d4b7fac1357"
PINNED_URL = f"https://raw.githubusercontent.com/THUDM/LongAlign/{PINNED_COMMIT}/LongBench_Chat/"
FILES = ("test_cases.json", "few_shots.json", "prompt_fs.txt")
# Digests of the files at the pinned commit. test_cases.json's is not pinned here yet: its first
# download records the digest next to the cached file and later loads are checked against it
# (set longbench_chat.test_cases_sha256 to pin it).
SHA256 = {
    "few_shots.json": "1849e4141863b65c2ac5728f8cfb5d1bfbe870cbd36e2c58fc79108755b4178d",
    "prompt_fs.txt": "c68efc995bfd8ea586012b91ec59c1b12687f462ab4c1a12e6935056dbe76ef7",
}
SYSTEM_PROMPT = "You're a good assistant at evaluating the quality of texts."
PUBLISHED_QUESTIONS = 50
EXAMPLES = 3
SLOTS = 3 + 2 * EXAMPLES  # question, reference answer, (example, score) x 3, answer to rate
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class Question:
    idx: int
    prompt: str  # the long input with the question: what the model answers
    query: str  # the short question: what the judge sees
    answer: str  # the human reference answer
    language: str


@dataclass
class Benchmark:
    questions: list[Question]
    examples: dict[int, list[tuple[str, int]]]  # idx -> 3 (answer, human score)
    template: str
    info: dict = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dir(config: LongBenchChatConfig) -> Path:
    root = Path(config.cache_dir) if config.cache_dir else cache_root()
    return root / "longbench_chat" / PINNED_COMMIT


def _fetch(name: str, folder: Path, expected: str | None) -> Path:
    """The pinned ``name`` in ``folder``, downloaded if missing, its digest checked."""
    path = folder / name
    record = folder / f"{name}.sha256"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.part"
        log.info("downloading %s%s", PINNED_URL, name)
        try:
            with urllib.request.urlopen(PINNED_URL + name, timeout=120) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot download {PINNED_URL}{name} ({exc}); point "
                            "scoring.longbench_chat.data at a local copy") from None
        os.replace(tmp, path)
    got = sha256_file(path)
    want = expected or (record.read_text().strip() if record.is_file() else None)
    if want and got != want:
        path.unlink(missing_ok=True)  # a later run downloads it again
        raise UserError(f"checksum mismatch for {name} of LongBench-Chat: expected sha256 {want}, "
                        f"got {got}; the cached copy was removed")
    if not want:
        record.write_text(got + "\n")
        log.warning("recorded sha256 %s of %s on first download (pin it with "
                    "longbench_chat.test_cases_sha256)", got, name)
    return path


def locate(config: LongBenchChatConfig) -> dict[str, Path]:
    """Paths of the three files, downloading the pinned ones when ``data`` is ``"pinned"``."""
    if config.data == "pinned":
        folder = download_dir(config)
        paths = {n: _fetch(n, folder, SHA256.get(n)) for n in FILES if n != "test_cases.json"}
        paths["test_cases.json"] = (Path(config.test_cases) if config.test_cases else
                                    _fetch("test_cases.json", folder, config.test_cases_sha256))
    else:
        folder = Path(config.data)
        if not folder.is_dir():
            raise UserError(f"LongBench-Chat data directory not found: {folder}")
        paths = {n: folder / n for n in FILES}
        if config.test_cases:
            paths["test_cases.json"] = Path(config.test_cases)
    for name, path in paths.items():
        if not path.is_file():
            raise UserError(f"LongBench-Chat file missing: {path} (get {name} from {PINNED_URL}{name})")
    if config.test_cases_sha256:
        got = sha256_file(paths["test_cases.json"])
        if got != config.test_cases_sha256:
            raise UserError(f"checksum mismatch for {paths['test_cases.json']}: expected sha256 "
                            f"{config.test_cases_sha256}, got {got}")
    return paths


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON (truncated file?): {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None


def language(record: dict) -> str:
    """``record['language']`` when given, else ``zh`` if the question has CJK characters, else ``en``."""
    given = record.get("language") or record.get("lang")
    if isinstance(given, str) and given.strip():
        return given.strip().lower()
    return "zh" if _CJK.search(record["query"]) else "en"


def parse_examples(data, path: Path) -> list[list[tuple[str, int]]]:
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty list of example lists")
    out = []
    for i, entry in enumerate(data):
        ok = isinstance(entry, list) and len(entry) == EXAMPLES and all(
            isinstance(e, dict) and isinstance(e.get("answer"), str) and isinstance(e.get("score"), int)
            and not isinstance(e.get("score"), bool) and 1 <= e["score"] <= 10 for e in entry)
        if not ok:
            raise UserError(f"{path}: entry {i} is not {EXAMPLES} {{answer: str, score: 1-10}} examples")
        out.append([(e["answer"], e["score"]) for e in entry])
    return out


def parse_cases(data, path: Path, examples: int) -> list[Question]:
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty list of test cases")
    questions: list[Question] = []
    seen: set[int] = set()
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise UserError(f"{path}: record {i} is not an object")
        missing = [k for k in ("prompt", "query", "answer") if not isinstance(record.get(k), str)
                   or not record[k].strip()]
        idx = record.get("idx")
        if not isinstance(idx, int) or isinstance(idx, bool):
            missing.insert(0, "idx")
        if missing:
            raise UserError(f"{path}: record {i} lacks {', '.join(missing)} (truncated or wrong file?)")
        if idx in seen:
            raise UserError(f"{path}: idx {idx} appears twice")
        if not 1 <= idx <= examples:
            raise UserError(f"{path}: idx {idx} has no few-shot examples (few_shots.json has {examples})")
        seen.add(idx)
        questions.append(Question(idx, record["prompt"], record["query"], record["answer"], language(record)))
    return questions


def check_template(template: str, path: Path) -> None:
    slots = template.count("{}")
    if slots != SLOTS or template.count("{") != SLOTS or template.count("}") != SLOTS:
        raise UserError(f"{path}: the judge template must have exactly {SLOTS} '{{}}' slots and no "
                        f"other braces (found {slots} slots); truncated or wrong file?")


def load_benchmark(config: LongBenchChatConfig) -> Benchmark:
    """Load, validate and (with ``limit``) cut LongBench-Chat."""
    paths = locate(config)
    examples = parse_examples(_json(paths["few_shots.json"]), paths["few_shots.json"])
    questions = parse_cases(_json(paths["test_cases.json"]), paths["test_cases.json"], len(examples))
    template = paths["prompt_fs.txt"].read_text(encoding="utf-8")
    check_template(template, paths["prompt_fs.txt"])
    digests = {n: sha256_file(p) for n, p in paths.items()}
    modified = sorted(n for n, d in SHA256.items() if digests[n] != d)
    if modified:
        log.warning("LongBench-Chat %s differ(s) from the pinned benchmark files", ", ".join(modified))
    available = len(questions)
    if config.limit:
        questions = questions[: config.limit]
    partial = len(questions) < PUBLISHED_QUESTIONS
    if partial:
        log.warning("LongBench-Chat: %d of the %d published questions; the score is not comparable "
                    "with published numbers", len(questions), PUBLISHED_QUESTIONS)
    info = {"source": "pinned" if config.data == "pinned" else "local", "commit": PINNED_COMMIT,
            "sha256": digests, "modified_files": modified, "questions": len(questions),
            "questions_in_file": available, "partial": partial}
    return Benchmark(questions, {i + 1: e for i, e in enumerate(examples)}, template, info)
