"""The launcher's Role (k8s/base/role.yaml) grants exactly what the launcher calls.

Two views of "what the launcher calls": the client methods in its source (each mapped to the
verb and resource it needs), and the requests the fake API server records while the launcher runs
every path (TrainJob and PyTorchJob; create, adopt, watch, logs, events, own pod, delete).
"""

import json
import re
from pathlib import Path

import yaml
from kube_fake import COMPLETE, NS, SUCCEEDED_PT, make, trainjob_pod

from longalign.training.launcher import KubeJobs

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "longalign" / "training" / "launcher"
# client method -> the verb it needs, and the resource when the method fixes it
METHODS = {
    "create_namespaced_custom_object": ("create", None),
    "get_namespaced_custom_object": ("get", None),
    "patch_namespaced_custom_object": ("patch", None),
    "delete_namespaced_custom_object": ("delete", None),
    "list_namespaced_pod": ("list", ("", "pods")),
    "read_namespaced_pod": ("get", ("", "pods")),
    "read_namespaced_pod_log": ("get", ("", "pods/log")),
    "list_namespaced_event": ("list", ("", "events")),
}


def role_grants() -> set[tuple[str, str, str]]:
    role = yaml.safe_load((ROOT / "k8s" / "base" / "role.yaml").read_text())
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def request_permission(method: str, path: str, query: dict) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) that the API server authorizes a request as."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        group, rest = "", parts[4:]
    else:  # /apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        group, rest = parts[1], parts[5:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) == 3 else "")
    named = len(rest) >= 2
    verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(method)
    if verb is None:
        verb = "get" if named else ("watch" if query.get("watch") in ("true", "1") else "list")
    return group, resource, verb


def test_client_calls_in_the_source_are_all_known():
    called = set()
    for path in LAUNCHER.glob("*.py"):
        called |= set(re.findall(r"\.(?:custom|core)\.(\w+)\(", path.read_text()))
    assert called == set(METHODS), "a new API call: add it to METHODS, the Role and a scenario below"
    fixed = {(g, r, verb) for verb, gr in METHODS.values() if gr for g, r in [gr]}
    assert fixed <= role_grants()


def _run_every_path(kube, kind):
    fake, api = kube
    owner = {"name": "launcher-pod", "uid": "uid-1"}
    fake.own_pods[owner["name"]] = {"metadata": {"name": owner["name"], "uid": owner["uid"]}}
    cfg, name, m = make(kind=kind, num_nodes=2)
    m["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", **owner}]
    done = COMPLETE if kind == "trainjob" else SUCCEEDED_PT
    fake.scripts[name] = [None, None, None, done]
    if kind == "trainjob":
        fake.objects[f"apis/jobset.x-k8s.io/v1alpha2/namespaces/{NS}/jobsets/{name}"] = {"status": {}}
        fake.pods.append(trainjob_pod(f"{name}-node-0-0-aaaaa", name, log="hello\n"))
    else:
        fake.pods.append({"job": name, "name": f"{name}-master-0", "phase": "Running", "container": "pytorch",
                          "log": "hello\n", "labels": {"training.kubeflow.org/job-name": name,
                                                       "training.kubeflow.org/replica-type": "master",
                                                       "training.kubeflow.org/replica-index": "0"}})
    lines = []
    jobs = KubeJobs(cfg, api, NS, lines.append, owner=owner)
    jobs.run(m)  # create, wait (status, phase, events, own pod, logs), delete after success
    # a retried launcher adopts the running job of its run and takes over its ownership
    stale = json.loads(json.dumps(m))
    stale["metadata"]["ownerReferences"][0]["uid"] = "uid-0"
    plural = "trainjobs" if kind == "trainjob" else "pytorchjobs"
    group = "apis/trainer.kubeflow.org/v1alpha1" if kind == "trainjob" else "apis/kubeflow.org/v1"
    fake.objects[f"{group}/namespaces/{NS}/{plural}/{name}"] = stale
    fake.scripts[name] = [None]
    assert jobs.create(m) == "adopted"
    return fake.requests, lines


def test_the_role_grants_exactly_the_requests_the_launcher_makes(kube):
    requests, lines = _run_every_path(kube, "trainjob")
    seen = {request_permission(method, path, query) for method, path, query, _ in requests}
    assert ("", "pods/log", "get") in seen and ("jobset.x-k8s.io", "jobsets", "get") in seen, lines
    seen_pt = _run_every_path_pytorch()
    assert seen | seen_pt == role_grants()


def _run_every_path_pytorch():
    from kube_fake import FakeKube
    from kubernetes import client

    fake = FakeKube()
    host = fake.serve()
    try:
        requests, _ = _run_every_path((fake, client.ApiClient(client.Configuration(host=host))), "pytorchjob")
    finally:
        fake.server.shutdown()
    return {request_permission(method, path, query) for method, path, query, _ in requests}
