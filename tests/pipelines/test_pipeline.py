"""The compiled DAG: five stage tasks, typed artifacts between them, caching set per task, and the
Kubernetes platform spec (volume, secrets, GPUs, placement, /dev/shm, timeouts) wired to parameters."""

from pathlib import Path

import pytest
import yaml

from longalign.config import STAGES
from longalign.pipelines import platform
from longalign.orchestrate import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
# The stage tasks plus the steps around them: the data fingerprint in front of sourcing and the
# promotion gate after scoring.
TASKS = ("fingerprint", *STAGES, "promotion")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("p") / "pipeline.yaml")
    return path.read_text()


@pytest.fixture(scope="module")
def platform_spec(spec):
    """The second YAML document: kfp-kubernetes settings per executor."""
    ir, platform_doc = yaml.safe_load_all(spec)
    return platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def load(text):
    """The pipeline document (the first of the two: pipeline spec, platform spec)."""
    return next(yaml.safe_load_all(text))


def test_committed_pipeline_yaml_matches_code(spec):
    committed = ROOT / "pipelines" / "pipeline.yaml"
    # Compared as data: the header comment lists dict defaults in protobuf's (unstable) map order.
    assert list(yaml.safe_load_all(committed.read_text())) == list(yaml.safe_load_all(spec)), (
        "pipelines/pipeline.yaml is stale (any change under longalign/, components/ or pipelines/ changes "
        "the image tag): run `make compile` and commit the result")


def test_five_stage_tasks_with_typed_artifact_edges(spec):
    ir = load(spec)
    tasks = ir["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(TASKS)
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
        ("promotion", "model"): ("training", "model"),
        ("promotion", "scores"): ("scoring", "scores"),
        ("promotion", "corpus"): ("sourcing", "corpus"),
    }
    # artifacts are typed
    comps = ir["components"]
    assert comps["comp-training"]["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert comps["comp-scoring"]["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_caching_follows_the_per_stage_policy(spec):
    tasks = load(spec)["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        assert task["cachingOptions"] == ({"enableCache": True} if platform.CACHING[name] else {}), name
    assert platform.CACHING["fingerprint"] is False and platform.CACHING["promotion"] is False
    assert all(platform.CACHING[s] for s in STAGES)


def test_the_fingerprint_is_a_parameter_input_of_sourcing(spec):
    """Parameters enter the cache key by value, artifacts only by URI: a changed fingerprint
    changes sourcing's key, an unchanged one (from an uncached task) keeps it."""
    tasks = load(spec)["root"]["dag"]["tasks"]
    assert tasks["sourcing"]["inputs"]["parameters"]["data_fingerprint"] == {
        "taskOutputParameter": {"outputParameterKey": "fingerprint", "producerTask": "fingerprint"}}
    assert tasks["fingerprint"]["inputs"]["parameters"]["config"] == {"componentInputParameter": "sourcing_config"}
    assert "artifacts" not in tasks["fingerprint"].get("inputs", {})


def test_every_stage_config_is_a_pipeline_parameter_with_defaults(spec):
    params = load(spec)["root"]["inputDefinitions"]["parameters"]
    assert params["base_model"]["parameterType"] == "STRING"
    for stage in (*STAGES, "promotion"):
        p = params[f"{stage}_config"]
        assert p["parameterType"] == "STRUCT"
        assert p["defaultValue"], stage


INFERENCE = ("generation", "scoring")  # the stages that may run local models (teacher, scoring)


def test_image_tag_is_the_version_and_code_digest(spec):
    from longalign.codeid import image_tag

    ir = load(spec)
    images = {name: e["container"]["image"] for name, e in ir["deploymentSpec"]["executors"].items()}
    # generation and scoring take theirs from a run parameter whose default is the data image
    param = ir["root"]["inputDefinitions"]["parameters"]["inference_image"]
    resolved = {name: param["defaultValue"] if "inference_image" in image else image
                for name, image in images.items()}
    assert resolved == {f"exec-{stage}": f"ghcr.io/longalign/longalign{'-cuda' if stage == 'training' else ''}:"
                        f"{image_tag()}" for stage in TASKS}
    assert {name for name, image in images.items() if "inference_image" in image} == {
        f"exec-{stage}" for stage in INFERENCE}


def test_platform_parameters_have_defaults_matching_k8s(spec):
    params = load(spec)["root"]["inputDefinitions"]["parameters"]
    expected = {
        "pvc_name": ("STRING", platform.PVC_NAME),
        "api_key_secret": ("STRING", platform.API_KEY_SECRET),
        "gpu_type": ("STRING", platform.GPU_TYPE),
        "gpu_count": ("NUMBER_INTEGER", platform.GPU_COUNT),
        "gpu_node_selector": ("STRUCT", {}),
        "gpu_tolerations": ("LIST", []),
        "inference_gpu_type": ("STRING", platform.GPU_TYPE),
        "inference_gpu_count": ("NUMBER_INTEGER", 0),
        "inference_tolerations": ("LIST", []),
    }
    for name, (kind, default) in expected.items():
        assert (params[name]["parameterType"], params[name]["defaultValue"]) == (kind, default), name
    pvc = yaml.safe_load((ROOT / "k8s" / "base" / "pvc.yaml").read_text())
    secret = yaml.safe_load((ROOT / "k8s" / "base" / "secret-template.yaml").read_text())
    assert (pvc["metadata"]["name"], secret["metadata"]["name"]) == (platform.PVC_NAME, platform.API_KEY_SECRET)


def test_every_task_mounts_the_shared_volume_named_by_the_parameter(platform_spec):
    assert set(platform_spec) == {f"exec-{stage}" for stage in TASKS}
    for name, executor in platform_spec.items():
        (mount,) = executor["pvcMount"]
        assert mount["mountPath"] == platform.DATA_MOUNT, name
        assert mount["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}, name


def test_timeouts_per_task(platform_spec):
    for stage in TASKS:
        assert int(platform_spec[f"exec-{stage}"]["activeDeadlineSeconds"]) == platform.TIMEOUT_SECONDS[stage]
    assert platform.TIMEOUT_SECONDS["training"] > platform.TIMEOUT_SECONDS["packing"]


def test_api_key_secret_reaches_generation_and_scoring_only(platform_spec):
    for stage in TASKS:
        secrets = platform_spec[f"exec-{stage}"].get("secretAsEnv", [])
        if stage not in ("generation", "scoring"):
            assert secrets == [], stage
            continue
        (secret,) = secrets
        assert secret["secretNameParameter"] == {"componentInputParameter": "api_key_secret"}
        assert secret["optional"] is True  # local/synthetic teachers need no secret
        (pair,) = secret["keyToEnv"]
        assert {pair["secretKey"]: pair["envVar"]} == platform.SECRET_ENV[stage]
        # the variable the stage's endpoint config reads by default
        assert pair["envVar"] == "OPENAI_API_KEY"


def test_training_gets_gpus_placement_and_shm_from_parameters(spec, platform_spec):
    ir = load(spec)
    resources = ir["deploymentSpec"]["executors"]["exec-training"]["container"]["resources"]
    assert resources["accelerator"] == {
        "resourceCount": "{{$.inputs.parameters['pipelinechannel--gpu_count']}}",
        "resourceType": "{{$.inputs.parameters['pipelinechannel--gpu_type']}}",
    }
    task_inputs = ir["root"]["dag"]["tasks"]["training"]["inputs"]["parameters"]
    assert task_inputs["pipelinechannel--gpu_count"] == {"componentInputParameter": "gpu_count"}
    assert task_inputs["pipelinechannel--gpu_type"] == {"componentInputParameter": "gpu_type"}
    training = platform_spec["exec-training"]
    assert training["nodeSelector"] == {"nodeSelectorJson": {"componentInputParameter": "gpu_node_selector"}}
    assert training["tolerations"] == [{"tolerationJson": {"componentInputParameter": "gpu_tolerations"}}]
    assert training["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm",
                                           "sizeLimit": platform.SHM_SIZE, "volumeName": "dshm"}]
    for stage in TASKS:
        if stage not in ("training", *INFERENCE):
            executor = platform_spec[f"exec-{stage}"]
            assert not {"nodeSelector", "tolerations", "emptyDirMounts"} & set(executor), stage
            assert "resources" not in ir["deploymentSpec"]["executors"][f"exec-{stage}"]["container"]


def check_inference_placement(ir, platform_spec, tasks=INFERENCE):
    """Generation and scoring (which run the local teacher and the scoring models) get their
    image, GPU count and type and tolerations from the `inference_*` run parameters, and no node
    selector: with the default 0 GPUs they run on any node (KFP's driver sets a limit of 0)."""
    for task in tasks:
        executor = ir["deploymentSpec"]["executors"][f"exec-{task}"]["container"]
        assert executor["image"] == "{{$.inputs.parameters['pipelinechannel--inference_image']}}"
        assert executor["resources"]["accelerator"] == {
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--inference_gpu_count']}}",
            "resourceType": "{{$.inputs.parameters['pipelinechannel--inference_gpu_type']}}",
        }
        inputs = ir["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
        for name in ("inference_image", "inference_gpu_count", "inference_gpu_type"):
            assert inputs[f"pipelinechannel--{name}"] == {"componentInputParameter": name}, task
        placement = platform_spec[f"exec-{task}"]
        assert placement["tolerations"] == [
            {"tolerationJson": {"componentInputParameter": "inference_tolerations"}}], task
        assert "nodeSelector" not in placement and "emptyDirMounts" not in placement, task
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["inference_gpu_count"]["defaultValue"] == 0


def test_generation_and_scoring_are_placed_by_the_inference_parameters(spec, platform_spec):
    check_inference_placement(load(spec), platform_spec)


def test_flaky_stages_retry_with_backoff(spec):
    tasks = load(spec)["root"]["dag"]["tasks"]
    for stage in TASKS:
        policy = tasks[stage].get("retryPolicy")
        if stage not in platform.RETRIES:
            assert policy is None, stage
            continue
        expected = platform.RETRIES[stage]
        assert policy["maxRetryCount"] == expected["num_retries"] >= 1
        assert policy["backoffDuration"] == expected["backoff_duration"]
        assert policy["backoffFactor"] == expected["backoff_factor"]
    assert set(platform.RETRIES) == {"generation", "scoring"}


def test_launcher_settings_turn_caching_off_and_share_the_volume():
    """The settings the Trainer launcher task gets when it replaces in-pod training."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def launcher(gpu_count: int) -> str:
        return str(gpu_count)

    @dsl.pipeline(name="launcher-settings")
    def pipe(pvc_name: str = "v", gpu_count: int = 2):
        platform.launcher_pod(launcher(gpu_count=gpu_count), pvc_name=pvc_name)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        compiler.Compiler().compile(pipe, f"{tmp}/p.yaml")
        ir, plat = yaml.safe_load_all(open(f"{tmp}/p.yaml").read())
    assert ir["root"]["dag"]["tasks"]["launcher"]["cachingOptions"] == {}
    executor = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-launcher"]
    assert executor["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
    assert int(executor["activeDeadlineSeconds"]) == platform.TIMEOUT_SECONDS["training"]
    assert "resources" not in ir["deploymentSpec"]["executors"]["exec-launcher"]["container"]


def test_promotion_is_the_last_step_and_records_the_run_id(spec):
    tasks = load(spec)["root"]["dag"]["tasks"]
    downstream = {t["taskInfo"]["name"] for t in tasks.values()
                  for d in t.get("dependentTasks", []) if d == "promotion"}
    assert downstream == set()
    assert set(tasks["promotion"]["dependentTasks"]) == {"training", "scoring", "sourcing"}
    params = tasks["promotion"]["inputs"]["parameters"]
    assert params["config"] == {"componentInputParameter": "promotion_config"}
    assert params["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
