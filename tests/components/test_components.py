"""The stage components: thin, compiled YAML committed and in sync, loadable by other pipelines."""

import inspect
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components

from longalign.components.registry import COMPONENTS, STAGE_COMPONENTS
from longalign.config import STAGES

ROOT = Path(__file__).resolve().parents[2]

# (library module, function) each component calls, and the artifact types it produces.
EXPECTED = {
    "sourcing": ("longalign.sourcing", "source", {"corpus": "system.Dataset", "summary": "system.Markdown"}),
    "generation": ("longalign.generation", "generate", {"chats": "system.Dataset", "preview": "system.Markdown"}),
    "packing": ("longalign.packing", "pack", {"packed": "system.Dataset", "summary": "system.Markdown"}),
    "training": ("longalign.training", "train", {"model": "system.Model", "summary": "system.Markdown"}),
    "scoring": ("longalign.scoring", "score", {"scores": "system.Dataset", "report": "system.HTML"}),
}


def test_one_component_per_stage_named_like_the_stage():
    assert list(STAGE_COMPONENTS) == list(STAGES)
    for stage, component in STAGE_COMPONENTS.items():
        assert component.name == stage
        assert (ROOT / "components" / stage / "README.md").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_component_is_thin_and_calls_its_library_function(stage):
    module, function, _ = EXPECTED[stage]
    source = inspect.getsource(STAGE_COMPONENTS[stage].python_func)
    body = source.split('"""')[-1]
    code = [line for line in body.splitlines() if line.strip()]
    assert f"from {module} import {function}" in body
    assert len(code) <= 8, f"{stage} component body has grown: keep logic in the library"


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_committed_component_yaml_matches_code(name, tmp_path):
    folder, filename, component = COMPONENTS[name]
    fresh = tmp_path / "component.yaml"
    compiler.Compiler().compile(component, str(fresh))
    committed = ROOT / "components" / folder / filename
    assert yaml.safe_load(committed.read_text()) == yaml.safe_load(fresh.read_text()), (
        f"{committed} is stale (any change under longalign/, components/ or pipelines/ changes the image "
        "tag): run `make compile` and commit the result")


@pytest.mark.parametrize("stage", STAGES)
def test_component_yaml_loads_for_reuse(stage):
    loaded = components.load_component_from_file(str(ROOT / "components" / stage / "component.yaml"))
    spec = yaml.safe_load((ROOT / "components" / stage / "component.yaml").read_text())
    outputs = spec["components"][f"comp-{stage}"]["outputDefinitions"]["artifacts"]
    for name, schema in EXPECTED[stage][2].items():
        assert outputs[name]["artifactType"]["schemaTitle"] == schema
    assert "metrics" in outputs and outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert loaded.name == stage


def test_components_do_not_install_kfp_at_runtime():
    # The image carries kfp and longalign; a pip install at pod start would be slow and unpinned.
    for folder, filename, _ in COMPONENTS.values():
        text = (ROOT / "components" / folder / filename).read_text()
        assert "pip install" not in text
        assert "from longalign." in text
