"""Every object the launcher can build, and every custom object under k8s/, against the upstream
CRDs of the newest two Kubeflow Trainer releases (with the JobSet they pin) and Training Operator
v1.9 (tests/data/upstream-k8s), plus the admission and naming rules of their controllers.

Manifests come from ``plan_launch``, the code path of the real launch and of
``longalign launch --dry-run``.
"""

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_conformance import (TRAINER_VERSIONS, controller_names, name_errors, schema_errors,
                             trainer_admission, upstream_runtimes)

from longalign.config import TrainingConfig
from longalign.training.launcher.run import plan_launch

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
RUN_ID = "3f2a1c9b-7d4e-4c1a-9b8e-5d6f7a8b9c0d"  # a KFP run id: 36 characters
assert len(RUN_ID) == 36
OWNER_ENV = {"LONGALIGN_POD_NAME": "longalign-multinode-abcde-system-container-impl-1234567890",
             "LONGALIGN_POD_UID": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
             "LONGALIGN_POD_NAMESPACE": "team-a"}
FULL = {
    "namespace": "team-a", "gpus_per_node": 8, "cpu": "32", "memory": "512Gi",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "train"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                     "tolerationSeconds": 300}],
    "env": {"NCCL_DEBUG": "INFO", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"},
    "env_from_secrets": {"HF_TOKEN": "hf-credentials/token", "WANDB_API_KEY": "wandb/key"},
    "service_account": "longalign-trainer", "pvc": "team-a-data", "mount_path": "/data",
    "shm_size": "64Gi",
}
MINIMAL = {"namespace": "team-a", "gpus_per_node": 0, "shm_size": None}
# job kind and runtime -> where the runtime object comes from
JOBS = [("trainjob", "torch-distributed"), ("trainjob", "deepspeed-distributed"),
        ("trainjob", "longalign-deepspeed"), ("pytorchjob", None)]
NODES = [1, 2, 64]


def our_runtime() -> dict:
    return yaml.safe_load((K8S / "runtime" / "deepspeed-runtime.yaml").read_text())


def runtime_for(version: str, name: str | None) -> dict | None:
    if name is None:
        return None
    return our_runtime() if name == "longalign-deepspeed" else upstream_runtimes(version)[name]


def plan(kind, runtime, nodes, options, run_id=RUN_ID):
    launcher = {**options, "kind": kind, "num_nodes": nodes}
    if runtime:
        launcher["runtime"] = runtime
    return plan_launch(TrainingConfig().model_dump(mode="json"), launcher, "Qwen/Qwen2.5-7B-Instruct",
                       run_id, default_image="registry.example/longalign:1",
                       default_gpu_image="registry.example/longalign-cuda:1", environ=OWNER_ENV,
                       sa_file="/nonexistent")


CASES = list(itertools.product(TRAINER_VERSIONS, JOBS, NODES, ["full", "minimal"]))


@pytest.mark.parametrize("version,job,nodes,options", CASES,
                         ids=[f"{v}-{k}-{r}-{n}n-{o}" for v, (k, r), n, o in CASES])
def test_every_launcher_manifest_passes_the_upstream_schemas_and_admission(version, job, nodes, options):
    kind, runtime = job
    p = plan(kind, runtime, nodes, FULL if options == "full" else MINIMAL)
    assert p.objects == [p.manifest]
    for obj in p.objects:
        assert schema_errors(obj, version) == []
        if kind == "trainjob":
            assert trainer_admission(obj, runtime_for(version, runtime)) == []
        names = controller_names(obj, runtime_for(version, runtime))
        assert name_errors(names) == [], names
    if options == "full":
        assert p.manifest["metadata"]["ownerReferences"][0]["uid"] == OWNER_ENV["LONGALIGN_POD_UID"]


def test_the_checks_catch_what_the_api_server_rejects():
    """The validator is not vacuous: unknown fields, wrong types, bad names and bad patches fail."""
    version = TRAINER_VERSIONS[-1]
    good = plan("trainjob", "longalign-deepspeed", 2, FULL).manifest
    assert schema_errors(good, version) == []

    def broken(change):
        obj = yaml.safe_load(yaml.safe_dump(good))
        change(obj)
        return obj

    unknown = broken(lambda o: o["spec"]["trainer"].update(numProcsPerNode=8))
    assert any("numProcsPerNode" in e for e in schema_errors(unknown, version))
    nested = broken(lambda o: o["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
                    ["replicatedJobs"][0]["template"]["spec"]["template"]["spec"].update(hostNetwrk=True))
    assert any("hostNetwrk" in e for e in schema_errors(nested, version))
    typed = broken(lambda o: o["spec"]["trainer"].update(numNodes="two"))
    assert schema_errors(typed, version)
    long_name = broken(lambda o: o["metadata"].update(name="x" * 64))
    assert any("63" in e for e in schema_errors(long_name, version))
    meta = broken(lambda o: o["metadata"].update(labelz={}))
    assert any("labelz" in e for e in schema_errors(meta, version))
    dup = broken(lambda o: o["spec"]["trainer"]["env"].append(dict(o["spec"]["trainer"]["env"][0])))
    assert any("duplicate" in e for e in schema_errors(dup, version))
    reserved = broken(lambda o: o["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"}))
    assert trainer_admission(reserved, runtime_for(version, "torch-distributed"))
    stray = broken(lambda o: o["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
                   ["replicatedJobs"][0].update(name="worker"))
    assert trainer_admission(stray, our_runtime())
    # the deepspeed runtime as it was: mlPolicy.torch.numProcPerNode is not in Trainer v2.2+
    old = our_runtime()
    old["spec"]["mlPolicy"]["torch"] = {"numProcPerNode": "auto"}
    for v in TRAINER_VERSIONS:
        assert any("numProcPerNode" in e for e in schema_errors(old, v))


def test_controller_names_fit_with_the_longest_run_ids_and_64_nodes():
    """The job name the launcher derives from a 36-character run id leaves room for every name
    the controllers derive; the old 55-character name would have been refused by JobSet."""
    for version, (kind, runtime) in itertools.product(TRAINER_VERSIONS, JOBS):
        for run_id in (RUN_ID, "A" * 36, "run-" + "9" * 60):
            p = plan(kind, runtime, 64, FULL, run_id)
            names = controller_names(p.manifest, runtime_for(version, runtime))
            assert name_errors(names) == [], names
            assert max(len(n) for n in names["dns1035_label"]) <= 63
    # Trainer's initializer jobs (dataset-initializer, 19 characters) fit as well
    p = plan("trainjob", "torch-distributed", 64, FULL)
    runtime = upstream_runtimes(TRAINER_VERSIONS[-1])["torch-distributed"]
    runtime = yaml.safe_load(yaml.safe_dump(runtime))
    runtime["spec"]["template"]["spec"]["replicatedJobs"].insert(0, {
        "name": "dataset-initializer", "template": {"spec": {"template": {"spec": {
            "containers": [{"name": "dataset-initializer"}]}}}}})
    assert name_errors(controller_names(p.manifest, runtime)) == []
    old = yaml.safe_load(yaml.safe_dump(p.manifest))
    old["metadata"]["name"] = "longalign-" + RUN_ID + "-1a2b3c4d"  # what round one built: 55
    assert name_errors(controller_names(old, runtime))


def test_names_are_unique_per_run_and_stable_across_retries():
    a = plan("trainjob", "torch-distributed", 2, FULL, RUN_ID).name
    assert a == plan("trainjob", "torch-distributed", 2, FULL, RUN_ID).name
    assert a != plan("trainjob", "torch-distributed", 2, FULL, RUN_ID[:-1] + "e").name


def _kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl); it builds k8s/ offline")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def custom_objects() -> list[tuple[str, dict]]:
    found = []
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        for doc in _kustomize(kustomization.parent):
            if "kubeflow.org" in doc["apiVersion"] or "x-k8s.io" in doc["apiVersion"]:
                found.append((str(kustomization.parent.relative_to(K8S)), doc))
    return found


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_every_custom_object_under_k8s_passes_the_upstream_schemas(version):
    objects = custom_objects()
    assert {d["metadata"]["name"] for _, d in objects} >= {"longalign-deepspeed"}
    for where, doc in objects:
        assert schema_errors(doc, version) == [], where


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_the_upstream_default_runtimes_pass_the_checks(version):
    """The validator accepts what the upstream projects ship themselves (no false alarms)."""
    for name, runtime in upstream_runtimes(version).items():
        assert schema_errors(runtime, version) == [], name
