"""The config reference in docs/ is generated from the models; every key is described."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from longalign.config import SECTIONS, RunConfig, describe
from longalign.config.reference import model_of, reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_committed_reference_is_fresh():
    assert DOC.read_text() == reference(), (
        "docs/config.md is stale: run `python -m longalign.config.reference docs/config.md` "
        "(or `make compile`)")


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    seen[model.__name__] = model
    for field in model.model_fields.values():
        inner = model_of(field.annotation)
        if inner is not None and inner.__name__ not in seen:
            _models(inner, seen)
    return seen


MODELS = _models(RunConfig, {})


def test_every_section_is_reachable_from_the_run_config():
    assert {m.__name__ for m in SECTIONS.values()} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
def test_every_field_has_a_description_in_the_reference(model):
    text = reference()
    assert f"## {model.__name__}" in text
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert f"| `{name}` |" in text


def test_describe_reads_nested_keys():
    assert describe("sourcing.min_tokens").startswith("Documents with fewer tokens")
    assert describe("scoring.longbench_chat.judge.base_url").startswith("OpenAI-compatible API root")
    assert describe("launcher.num_nodes") == "Pods (nodes) of the job."
