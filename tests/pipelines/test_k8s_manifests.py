"""k8s/: every kustomization builds offline, core kinds pass the Kubernetes schemas, the custom
resources have the structure Kubeflow Trainer expects, and the names agree with the pipeline."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from longalign.components.common import IMAGE_CUDA
from longalign.pipelines import platform

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/dev/namespaced", "overlays/prod", "runtime", "teacher"]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (Debian/Ubuntu: apt-get install kubectl); "
    "it builds the kustomizations offline")


def build(path: str) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(K8S / path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (Debian/Ubuntu: apt-get install kubectl)")
    return {path: build(path) for path in KUSTOMIZATIONS}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@needs_kubectl
@pytest.mark.parametrize("path", [p for p in KUSTOMIZATIONS if p != "runtime"])  # runtime: CRD only
def test_core_kinds_pass_schema_validation(built, path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    core = [d for d in built[path] if "kubeflow.org" not in d["apiVersion"]]
    assert core, path
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)


def test_secret_template_is_valid_and_holds_no_value():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    secret = yaml.safe_load((K8S / "base" / "secret-template.yaml").read_text())
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
    assert secret["metadata"]["name"] == platform.API_KEY_SECRET
    keys = {key for env in platform.SECRET_ENV.values() for key in env}
    assert set(secret["stringData"]) == keys
    assert all(value == "" for value in secret["stringData"].values())
    # not applied by any kustomization, so applying an overlay never blanks a real key
    for path in KUSTOMIZATIONS:
        text = (K8S / path / "kustomization.yaml").read_text()
        assert "secret-template.yaml" not in text.split("resources:")[-1], path


@needs_kubectl
def test_overlays_put_everything_in_the_namespace_kfp_runs_in(built):
    expected = {"overlays/dev": "kubeflow", "overlays/prod": "longalign"}
    for path, namespace in expected.items():
        for doc in built[path]:
            if doc["kind"] == "ClusterTrainingRuntime":
                assert "namespace" not in doc["metadata"], "cluster-scoped kind got a namespace"
            else:
                assert doc["metadata"]["namespace"] == namespace, (path, doc["kind"])
        (binding,) = by_kind(built[path], "RoleBinding")
        assert {s["namespace"] for s in binding["subjects"]} == {namespace}
    assert {s["name"] for s in by_kind(built["overlays/dev"], "RoleBinding")[0]["subjects"]} == {
        "longalign-pipeline-runner", "pipeline-runner"}
    assert {s["name"] for s in by_kind(built["overlays/prod"], "RoleBinding")[0]["subjects"]} == {
        "longalign-pipeline-runner", "default-editor"}


@needs_kubectl
def test_shared_volume_is_read_write_many_with_the_pipeline_default_name(built):
    sizes = {}
    for path in ("base", "overlays/dev", "overlays/prod"):
        (pvc,) = by_kind(built[path], "PersistentVolumeClaim")
        assert pvc["metadata"]["name"] == platform.PVC_NAME
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        sizes[path] = pvc["spec"]["resources"]["requests"]["storage"]
        if path != "base":  # the storage class is an overlay setting (an RWX class of the cluster)
            assert pvc["spec"]["storageClassName"], path
    assert sizes == {"base": "500Gi", "overlays/dev": "50Gi", "overlays/prod": "2Ti"}
    assert "storageClassName" not in by_kind(built["base"], "PersistentVolumeClaim")[0]["spec"]


@needs_kubectl
def test_dev_overlay_installs_the_runtime_the_pipeline_names_by_default(built):
    from longalign.pipelines.pipeline import LAUNCHER_DEFAULTS

    for path in ("overlays/dev", "overlays/prod"):
        runtimes = {d["metadata"]["name"] for d in by_kind(built[path], "ClusterTrainingRuntime")}
        assert LAUNCHER_DEFAULTS["runtime"] in runtimes, path


@needs_kubectl
def test_role_is_least_privilege_for_the_training_launcher(built):
    (role,) = by_kind(built["base"], "Role")
    grants = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants[(group, resource)] = set(rule["verbs"])
    # exactly what the launcher calls: tests/training/test_training_launcher_rbac.py
    assert ("trainer.kubeflow.org", "trainjobs") in grants and ("", "secrets") not in grants
    assert not any("*" in verbs or "*" in resource for (_, resource), verbs in grants.items())
    (binding,) = by_kind(built["base"], "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}


@needs_kubectl
def test_deepspeed_runtime_structure(built):
    (runtime,) = by_kind(built["overlays/prod"], "ClusterTrainingRuntime")
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "deepspeed"
    policy = runtime["spec"]["mlPolicy"]
    assert isinstance(policy["numNodes"], int) and policy["numNodes"] >= 1
    assert [k for k in policy if k != "numNodes"] == ["torch"]  # exactly one launcher policy
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (node,) = [j for j in jobs if j["name"] == "node"]
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "node"]
    # a fallback only: the launcher sets spec.trainer.image (tagged with the code digest) on every job
    assert container["image"].rsplit(":", 1)[0] == IMAGE_CUDA.rsplit(":", 1)[0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[platform.DATA_MOUNT]]["persistentVolumeClaim"]["claimName"] == platform.PVC_NAME
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert pod["securityContext"]["runAsNonRoot"] is True


@needs_kubectl
def test_teacher_service_selects_the_vllm_pods(built):
    (deployment,) = by_kind(built["teacher"], "Deployment")
    (service,) = by_kind(built["teacher"], "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert ":" in container["image"] and not container["image"].endswith(":latest")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    secret_refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert all(ref["name"] == platform.API_KEY_SECRET and ref.get("optional") for ref in secret_refs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
