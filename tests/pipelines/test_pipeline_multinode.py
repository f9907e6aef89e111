"""The multi-node variant: the same DAG with the training task replaced by the Trainer launcher,
which is never cached, gets the per-node GPU parameters as inputs (for the job, not for its own
pod) and a run-unique id, and shares the volume where scoring reads the checkpoint."""

from pathlib import Path

import pytest
import yaml

from longalign.orchestrate import compile_pipeline
from longalign.pipelines import platform
from longalign.pipelines.pipeline import LAUNCHER_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("p") / "multinode.yaml",
                            pipeline="longalign-multinode")
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_multinode_yaml_matches_code(docs):
    committed = ROOT / "pipelines" / "pipeline-multinode.yaml"
    assert list(yaml.safe_load_all(committed.read_text())) == docs, (
        "pipelines/pipeline-multinode.yaml is stale (any change under longalign/, components/ or "
        "pipelines/ changes the image tag): run `make compile` and commit the result")


def test_launcher_replaces_training_and_feeds_scoring(docs):
    ir = docs[0]
    assert ir["pipelineInfo"]["name"] == "longalign-multinode"
    tasks = ir["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["fingerprint", "generation", "packing", "promotion", "scoring", "sourcing",
                             "training-launcher"]
    launcher = tasks["training-launcher"]
    assert launcher["taskInfo"]["name"] == "training"
    assert launcher["inputs"]["artifacts"]["packed"]["taskOutputArtifact"] == {
        "producerTask": "packing", "outputArtifactKey": "packed"}
    assert tasks["scoring"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "training-launcher", "outputArtifactKey": "model"}
    assert launcher["cachingOptions"] == {}  # its effects live on the cluster: never cached
    for name in ("sourcing", "generation", "packing", "scoring"):
        assert tasks[name]["cachingOptions"] == {"enableCache": True}
    assert tasks["fingerprint"]["cachingOptions"] == {}  # what notices new data: never cached
    assert tasks["promotion"]["cachingOptions"] == {}  # reads and writes the registry
    assert tasks["promotion"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "training-launcher", "outputArtifactKey": "model"}
    assert tasks["sourcing"]["inputs"]["parameters"]["data_fingerprint"]["taskOutputParameter"][
        "producerTask"] == "fingerprint"


def test_launcher_inputs_come_from_run_parameters(docs):
    ir = docs[0]
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["launcher_config"]["defaultValue"] == LAUNCHER_DEFAULTS
    inputs = ir["root"]["dag"]["tasks"]["training-launcher"]["inputs"]["parameters"]
    assert inputs["pvc_name"] == {"componentInputParameter": "pvc_name"}
    # one source of truth for the job's GPUs: launcher_config, whose default the UI shows
    assert not [p for p in params if p.startswith("gpu_")] and not [p for p in inputs if p.startswith("gpu_")]
    assert {"gpus_per_node", "gpu_resource", "num_nodes", "node_selector", "tolerations"} <= set(LAUNCHER_DEFAULTS)
    assert inputs["launcher_config"] == {"componentInputParameter": "launcher_config"}
    assert inputs["config"] == {"componentInputParameter": "training_config"}
    # one job per run: the run id is the pipeline job's id
    assert inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_launcher_pod_has_the_volume_but_no_gpu(docs):
    ir, plat = docs
    executors = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounts = executors["exec-training-launcher"]["pvcMount"]
    assert mounts[0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
    assert mounts[0]["mountPath"] == platform.DATA_MOUNT
    assert "resources" not in ir["deploymentSpec"]["executors"]["exec-training-launcher"]["container"]
    # scoring mounts the same volume, so it can read the checkpoint the Model artifact points at
    assert executors["exec-scoring"]["pvcMount"][0]["mountPath"] == platform.DATA_MOUNT


def test_launcher_pod_knows_itself_and_the_image_registry(docs):
    """The job's owner is the launcher pod (cancel = pod deletion = garbage collection of the job):
    its name, uid and namespace come from the downward API; the registry of the job's image is the
    one the pipeline was compiled against."""
    from longalign.components.common import REPOSITORY, REPOSITORY_ENV
    from longalign.training.launcher.config import parse_launcher_config
    from longalign.training.launcher.run import launcher_owner

    ir, plat = docs
    executor = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-training-launcher"]
    fields = {e["name"]: e["fieldPath"] for e in executor["fieldPathAsEnv"]}
    assert fields == platform.LAUNCHER_FIELD_ENV
    container = ir["deploymentSpec"]["executors"]["exec-training-launcher"]["container"]
    assert {"name": REPOSITORY_ENV, "value": REPOSITORY} in container["env"]
    env = {"LONGALIGN_POD_NAME": "p", "LONGALIGN_POD_UID": "u", "LONGALIGN_POD_NAMESPACE": "ns"}
    assert set(fields) == set(env)
    cfg = parse_launcher_config({})
    assert launcher_owner(cfg, "ns", env, sa_file="/nonexistent") == {"name": "p", "uid": "u"}
    assert launcher_owner(cfg, "other-ns", env, sa_file="/nonexistent") is None  # no cross-namespace owners


def test_generation_and_scoring_are_placed_by_the_inference_parameters(docs):
    from test_pipeline import check_inference_placement

    ir, plat = docs
    check_inference_placement(ir, plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
