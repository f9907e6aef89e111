"""The KFP `training_launcher` component: thin, compiles, and wires into a pipeline with the
shared PVC mounted, caching off and the run id as the job's name source."""

import inspect

import pytest
import yaml
from kfp import compiler, dsl, kubernetes

from longalign.components.training.launcher import training_launcher


def test_component_is_thin_and_calls_the_library():
    body = inspect.getsource(training_launcher.python_func).split('"""')[-1]
    code = [line for line in body.splitlines() if line.strip()]
    assert "from longalign.training.launcher import launch_training" in body
    assert len(code) <= 10  # imports, one library call (with the overrides), publishing


def test_component_compiles_with_its_artifacts(tmp_path):
    out = tmp_path / "launcher.yaml"
    compiler.Compiler().compile(training_launcher, str(out))
    text = out.read_text()
    spec = yaml.safe_load(text)
    comp = spec["components"]["comp-training-launcher"]
    outputs = {k: v["artifactType"]["schemaTitle"] for k, v in comp["outputDefinitions"]["artifacts"].items()}
    assert outputs == {"model": "system.Model", "manifest": "system.Artifact",
                       "summary": "system.Markdown", "metrics": "system.Metrics"}
    assert comp["inputDefinitions"]["artifacts"]["packed"]["artifactType"]["schemaTitle"] == "system.Dataset"
    params = comp["inputDefinitions"]["parameters"]
    # GPUs and placement come from launcher_config only: no second source that could override it
    assert set(params) == {"config", "launcher_config", "base_model", "run_id", "pvc_name"}
    assert params["pvc_name"].get("isOptional")
    assert "pip install" not in text  # the image carries kfp and longalign


def test_launcher_wires_into_a_pipeline_with_pvc_no_cache_and_run_id(tmp_path):
    @dsl.component(base_image="python:3.11")
    def make_packed(packed: dsl.Output[dsl.Dataset]):
        open(packed.path, "w").write("x")

    @dsl.pipeline(name="launcher-wiring")
    def wiring(launcher_config: dict = {}, pvc: str = "longalign-data"):
        packed = make_packed()
        task = training_launcher(config={}, launcher_config=launcher_config, base_model="embedded:tiny",
                                 run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, packed=packed.outputs["packed"],
                                 pvc_name=pvc)
        task.set_caching_options(False)
        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/mnt/longalign")

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(wiring, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    task = docs[0]["root"]["dag"]["tasks"]["training-launcher"]
    assert task.get("cachingOptions", {}).get("enableCache") is not True  # default would be True
    assert task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert task["inputs"]["parameters"]["pvc_name"]["componentInputParameter"] == "pvc"
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-training-launcher"]
    assert platform["pvcMount"][0]["mountPath"] == "/mnt/longalign"


@pytest.mark.slow  # about 20 s here: the task subprocess imports torch through longalign.training
def test_component_runs_through_kfp_local_against_a_fake_cluster(tmp_path, monkeypatch):
    """The real component body in kfp.local's subprocess runner, with kubeconfig credentials
    pointing at the fake API server; the fake 'training pods' write the checkpoint on completion."""
    import json

    from kfp import local
    from kube_fake import COMPLETE, FakeKube

    fake = FakeKube()
    host = fake.serve()
    volume = tmp_path / "volume"

    def training_pods_write_the_checkpoint(name):
        model = volume / "runs" / name / "model"
        model.mkdir(parents=True)
        (model / "stats.json").write_text(json.dumps({"metrics": {"final_loss": 0.75}}))
        (model / "summary.md").write_text("# trained on the cluster\n")

    fake.default_script = [None, COMPLETE]
    fake.when_complete = training_pods_write_the_checkpoint
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": host}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    @dsl.component(base_image="python:3.11")
    def make_packed(packed: dsl.Output[dsl.Dataset]):
        import os

        os.makedirs(packed.path)
        open(os.path.join(packed.path, "rows.arrow"), "wb").write(b"rows")

    @dsl.pipeline(name="launcher-local")
    def run_launcher(launcher_config: dict) -> dsl.Model:
        packed = make_packed()
        task = training_launcher(config={"epochs": 1}, launcher_config=launcher_config,
                                 base_model="embedded:tiny", run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                 packed=packed.outputs["packed"])
        return task.outputs["model"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    try:
        result = run_launcher(launcher_config={"namespace": "team-a", "poll_seconds": 0.05,
                                               "mount_path": str(volume), "num_nodes": 2})
    finally:
        fake.server.shutdown()
    model = result.output
    (post,) = [r for r in fake.requests if r[0] == "POST"]
    name = post[3]["metadata"]["name"]
    assert post[1] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"
    assert model.metadata["job_name"] == name and model.metadata["path"] == f"{volume}/runs/{name}/model"
    assert json.loads(open(f"{model.path}/pointer.json").read())["uri"] == f"pvc://longalign-data/runs/{name}/model"
    assert (volume / "runs" / name / "packed" / "rows.arrow").read_bytes() == b"rows"
