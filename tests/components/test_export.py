"""`longalign components export DIR`: one self-describing folder per stage for platform teams."""

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from kfp import components

from longalign import __version__
from longalign.codeid import code_digest, image_tag
from longalign.cli import main
from longalign.components.registry import COMPONENTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "components"
    try:
        code = main(["components", "export", str(out)])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    return out


def test_every_component_has_yaml_readme_and_metadata(exported):
    assert sorted(p.name for p in exported.iterdir() if p.is_dir()) == sorted(COMPONENTS)
    assert "training_launcher" in COMPONENTS
    for name, (folder, _, _) in COMPONENTS.items():
        assert {p.name for p in (exported / name).iterdir()} == {"component.yaml", "README.md", "metadata.json"}
        assert (exported / name / "README.md").read_text() == (ROOT / "components" / folder / "README.md").read_text()


@pytest.mark.parametrize("stage", list(COMPONENTS))
def test_metadata_describes_the_exported_yaml(exported, stage):
    path = exported / stage / "component.yaml"
    meta = json.loads((exported / stage / "metadata.json").read_text())
    spec = yaml.safe_load(path.read_text())
    assert meta["name"] == stage and meta["longalign_version"] == __version__
    assert meta["component_yaml_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert meta["image"] == executor["container"]["image"] and meta["image"].endswith(f":{image_tag()}")
    assert meta["code_digest"] == code_digest()
    folder, filename, component = COMPONENTS[stage]
    (definition,) = spec["components"].values()
    assert set(meta["inputs"]) == set(definition["inputDefinitions"].get("parameters", {})) | set(
        definition["inputDefinitions"].get("artifacts", {}))
    # every step that takes a config section takes it as a dict; the sharded packing writer and
    # join read everything from the plan step's output
    assert meta["inputs"].get("config") == ("STRUCT" if stage not in (
        "packing_write", "packing_join") else None)
    assert meta["outputs"]["metrics"] == "system.Metrics"
    assert meta["description"] and "\n\n" not in meta["description"]
    # the same component the repository commits, loadable by another pipeline
    assert yaml.safe_load(path.read_text()) == yaml.safe_load((ROOT / "components" / folder / filename).read_text())
    assert components.load_component_from_file(str(path)).name == component.name


def test_index_lists_every_component(exported):
    index = json.loads((exported / "index.json").read_text())
    assert index["longalign_version"] == __version__
    assert [c["name"] for c in index["components"]] == list(COMPONENTS)
    for entry in index["components"]:
        assert (exported / entry["component"]).is_file()
        assert entry["sha256"] == json.loads((exported / entry["name"] / "metadata.json").read_text())[
            "component_yaml_sha256"]
