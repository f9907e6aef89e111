"""longalign-extend compiled: the committed YAML matches the code, kfp's loader reads it, and the
seven tasks are wired sourcing -> text packing -> pretrain -> generation -> chat packing ->
fine-tuning -> scoring with the configs of the `extend` section as their parameters."""

from pathlib import Path

import pytest
import yaml

from longalign.config import RunConfig
from longalign.errors import UserError
from longalign.orchestrate import compile_pipeline, run_arguments, run_local
from longalign.pipelines.pipeline import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pipelines" / "pipeline-extend.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_pipeline(tmp_path_factory.mktemp("p") / "extend.yaml", pipeline="longalign-extend")


def test_committed_extend_yaml_matches_code(compiled):
    assert list(yaml.safe_load_all(COMMITTED.read_text())) == list(yaml.safe_load_all(
        compiled.read_text())), "pipelines/pipeline-extend.yaml is stale: run `make compile`"


def test_kfp_loads_the_committed_pipeline():
    from kfp import components

    loaded = components.load_component_from_file(str(COMMITTED))
    assert loaded.name == "longalign-extend"
    assert {"text_packing_config", "pretrain_config", "training_config"} <= set(loaded.component_spec.inputs)


def test_tasks_and_artifact_edges(compiled):
    ir = next(yaml.safe_load_all(compiled.read_text()))
    tasks = ir["root"]["dag"]["tasks"]
    edges = {}
    for name, task in tasks.items():
        for input_name, arg in task["inputs"].get("artifacts", {}).items():
            upstream = arg["taskOutputArtifact"]
            edges[(name, input_name)] = (upstream["producerTask"], upstream["outputArtifactKey"])
    assert edges == {
        ("packing", "chats"): ("sourcing", "corpus"),  # the text packing task
        ("training", "packed"): ("packing", "packed"),  # pretrain
        ("generation", "corpus"): ("sourcing", "corpus"),
        ("packing-2", "chats"): ("generation", "chats"),  # chat packing
        ("training-2", "packed"): ("packing-2", "packed"),  # fine-tuning ...
        ("training-2", "start_model"): ("training", "model"),  # ... from the extended model
        ("scoring", "model"): ("training-2", "model"),
        ("scoring", "corpus"): ("sourcing", "corpus"),
    }
    params = {name: task["inputs"]["parameters"]["config"]["componentInputParameter"]
              for name, task in tasks.items()}
    assert params == {"sourcing": "sourcing_config", "packing": "text_packing_config",
                      "training": "pretrain_config", "generation": "generation_config",
                      "packing-2": "packing_config", "training-2": "training_config",
                      "scoring": "scoring_config"}
    defaults = ir["root"]["inputDefinitions"]["parameters"]
    # defaults: the embedded preset's extend section (the laptop run), like the other stages'
    assert defaults["pretrain_config"]["defaultValue"] == DEFAULTS["extend"]["training"]
    assert defaults["pretrain_config"]["defaultValue"]["objective"] == "pretrain"
    assert defaults["text_packing_config"]["defaultValue"] == DEFAULTS["extend"]["packing"]
    assert defaults["text_packing_config"]["defaultValue"]["format"] == "text"
    assert all(t["cachingOptions"] == {"enableCache": True} for t in tasks.values())


def test_run_arguments_check_the_extend_sections(compiled):
    args = run_arguments(RunConfig(), compiled, {"pretrain_config": {"objective": "pretrain"}})
    assert args["text_packing_config"]["format"] == "text"
    with pytest.raises(UserError, match="training"):
        run_arguments(RunConfig(), compiled, {"pretrain_config": {"objective": "pretrain",
                                                                  "loss": "longalign"}})


def test_run_local_refuses_the_multinode_pipeline(tmp_path):
    with pytest.raises(UserError, match="cluster"):
        run_local(RunConfig(), tmp_path, pipeline="longalign-multinode")


def test_generation_and_scoring_are_placed_by_the_inference_parameters(compiled):
    from test_pipeline import check_inference_placement

    ir, plat = yaml.safe_load_all(compiled.read_text())
    check_inference_placement(ir, plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
