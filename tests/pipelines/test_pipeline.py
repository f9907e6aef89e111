"""The compiled DAG: five stage tasks, typed artifacts between them, caching set per task."""

from pathlib import Path

import pytest
import yaml

from longalign.config import STAGES
from longalign.orchestrate import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("p") / "pipeline.yaml")
    return path.read_text()


def test_committed_pipeline_yaml_matches_code(spec):
    committed = ROOT / "pipelines" / "pipeline.yaml"
    # Compared as data: the header comment lists dict defaults in protobuf's (unstable) map order.
    assert yaml.safe_load(committed.read_text()) == yaml.safe_load(spec), (
        "pipelines/pipeline.yaml is stale: run `make compile` and commit the result")


def test_five_stage_tasks_with_typed_artifact_edges(spec):
    ir = yaml.safe_load(spec)
    tasks = ir["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STAGES)
    edges = {}
    for name, task in tasks.items():
        for input_name, arg in task["inputs"].get("artifacts", {}).items():
            upstream = arg["taskOutputArtifact"]
            edges[(name, input_name)] = (upstream["producerTask"], upstream["outputArtifactKey"])
    assert edges == {
        ("generation", "corpus"): ("sourcing", "corpus"),
        ("packing", "chats"): ("generation", "chats"),
        ("training", "packed"): ("packing", "packed"),
        ("scoring", "model"): ("training", "model"),
        ("scoring", "corpus"): ("sourcing", "corpus"),
    }
    # artifacts are typed
    comps = ir["components"]
    assert comps["comp-training"]["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert comps["comp-scoring"]["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_caching_is_set_on_every_task(spec):
    tasks = yaml.safe_load(spec)["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        assert task["cachingOptions"] == {"enableCache": True}, name


def test_every_stage_config_is_a_pipeline_parameter_with_defaults(spec):
    params = yaml.safe_load(spec)["root"]["inputDefinitions"]["parameters"]
    assert params["model"]["parameterType"] == "STRING"
    for stage in STAGES:
        p = params[f"{stage}_config"]
        assert p["parameterType"] == "STRUCT"
        assert p["defaultValue"], stage


def test_image_tag_is_the_package_version(spec):
    from longalign import __version__

    images = {e["container"]["image"] for e in yaml.safe_load(spec)["deploymentSpec"]["executors"].values()}
    assert images == {f"ghcr.io/longalign/longalign:{__version__}"}
