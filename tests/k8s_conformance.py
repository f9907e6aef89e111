"""Check objects against the upstream CRDs in tests/data/upstream-k8s, as the API server would.

- ``schema_errors``: the CRD's OpenAPI v3 schema turned into a JSON schema (Draft 4, which has
  OpenAPI 3.0's boolean ``exclusiveMinimum``) with unknown fields rejected wherever the schema
  does not preserve them (``kubectl apply --validate=strict`` / ``fieldValidation=Strict``);
  ``x-kubernetes-int-or-string``, ``-preserve-unknown-fields``, ``-embedded-resource`` and
  ``nullable`` mean what they mean to the API server; ``x-kubernetes-list-type: map|set`` entries
  must be unique; ``metadata`` is checked as ObjectMeta (known fields, label syntax, owner refs).
- CEL ``x-kubernetes-validations``: the rules that apply on create are evaluated by a Python
  twin of each rule (``CEL``); transition rules (``oldSelf``) only apply to updates and are
  skipped; a rule reached by an object with no twin here is an error, so a new upstream rule is
  never skipped silently.
- Admission and naming rules that live in the controllers (``trainer_admission``,
  ``controller_names``), each citing the upstream source it was read from.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

DATA = Path(__file__).resolve().parent / "data" / "upstream-k8s"
TRAINER_VERSIONS = ["v2.2.0", "v2.3.0"]  # the newest Trainer release and the one before
JOBSET_VERSION = "v0.12.0"  # pinned in kubeflow/trainer v2.3.0 go.mod
TRAINING_OPERATOR_VERSION = "v1.9.0"


def crd_files(trainer: str) -> list[Path]:
    """The CRDs of one API server setup: a Trainer release, its JobSet, the Training Operator."""
    folder = DATA / f"trainer-{trainer}"
    return [folder / "trainer.kubeflow.org_trainjobs.yaml",
            folder / "trainer.kubeflow.org_clustertrainingruntimes.yaml",
            folder / "trainer.kubeflow.org_trainingruntimes.yaml",
            DATA / f"jobset-{JOBSET_VERSION}" / "jobset.x-k8s.io_jobsets.yaml",
            DATA / f"training-operator-{TRAINING_OPERATOR_VERSION}" / "kubeflow.org_pytorchjobs.yaml"]


def upstream_runtimes(trainer: str) -> dict[str, dict]:
    """The Trainer release's default ClusterTrainingRuntimes by name."""
    out = {}
    for path in sorted((DATA / f"trainer-{trainer}").glob("runtime-*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[doc["metadata"]["name"]] = doc
    return out


@functools.lru_cache(maxsize=None)
def _crd_schemas(path: Path) -> dict[tuple[str, str], dict]:
    crd = yaml.safe_load(path.read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    return {(f"{group}/{v['name']}", kind): v["schema"]["openAPIV3Schema"]
            for v in crd["spec"]["versions"] if v.get("served", True)}


def schema_for(trainer: str, api_version: str, kind: str) -> dict:
    for path in crd_files(trainer):
        schemas = _crd_schemas(path)
        if (api_version, kind) in schemas:
            return schemas[(api_version, kind)]
    raise KeyError(f"no CRD serves {api_version} {kind} with Trainer {trainer}")


# ---------------------------------------------------------------- OpenAPI v3 -> JSON schema

_COPY = ("type", "required", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
         "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
         "minProperties", "maxProperties", "multipleOf")
_META = {"name", "namespace", "labels", "annotations", "ownerReferences", "generateName",
         "finalizers"}


def to_json_schema(s: dict) -> dict:
    out: dict[str, Any] = {k: s[k] for k in _COPY if k in s}
    if s.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in s:
        out["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
    if "items" in s:
        out["items"] = to_json_schema(s["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            # structural schemas repeat types only in the outer schema; the inner ones add
            # value validations (e.g. int-or-string's anyOf of integer and string)
            out[key] = [to_json_schema({**sub, "x-kubernetes-preserve-unknown-fields": True})
                        for sub in s[key]]
    if "not" in s:
        out["not"] = to_json_schema(s["not"])
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(s["additionalProperties"])
    elif isinstance(s.get("additionalProperties"), bool):
        out["additionalProperties"] = s["additionalProperties"]
    elif s.get("type") == "object" and not s.get("x-kubernetes-preserve-unknown-fields"):
        if s.get("x-kubernetes-embedded-resource"):
            props = out.setdefault("properties", {})
            for field in ("apiVersion", "kind"):
                props.setdefault(field, {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
        out["additionalProperties"] = False  # strict field validation: unknown = error
    if s.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@functools.lru_cache(maxsize=None)
def _validator(trainer: str, api_version: str, kind: str) -> jsonschema.Draft4Validator:
    schema = to_json_schema(schema_for(trainer, api_version, kind))
    schema["properties"]["metadata"] = {"type": "object"}  # checked by metadata_errors
    return jsonschema.Draft4Validator(schema)


_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def metadata_errors(meta: dict, cluster_scoped: bool = False) -> list[str]:
    """ObjectMeta as the API server checks it on create (apimachinery ValidateObjectMeta)."""
    errors = [f"metadata.{k}: unknown field" for k in meta if k not in _META]
    name = meta.get("name", "")
    if not name or len(name) > 253 or not _DNS1123_SUB.match(name):
        errors.append(f"metadata.name {name!r}: not a DNS-1123 subdomain")
    if cluster_scoped and meta.get("namespace"):
        errors.append("metadata.namespace: set on a cluster-scoped object")
    for key, value in (meta.get("labels") or {}).items():
        if not _QUALIFIED.match(key) or len(key.split("/")[-1]) > 63:
            errors.append(f"metadata.labels: invalid key {key!r}")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(f"metadata.labels[{key}]: invalid value {value!r}")
    for key, value in (meta.get("annotations") or {}).items():
        if not _QUALIFIED.match(key) or not isinstance(value, str):
            errors.append(f"metadata.annotations: invalid entry {key!r}")
    for ref in meta.get("ownerReferences") or []:
        allowed = {"apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"}
        missing = {"apiVersion", "kind", "name", "uid"} - set(ref)
        if missing or set(ref) - allowed:
            errors.append(f"metadata.ownerReferences: bad entry {ref!r}")
    return errors


# ---------------------------------------------------------------- CEL rules (create only)

def _has(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and key in obj


CEL: dict[str, Callable[[Any], bool]] = {
    # trainer v2.2.0/v2.3.0 pkg/apis/trainer/v1alpha1/trainjob_types.go (TrainJob)
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
        lambda s: bool(re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", s["metadata"]["name"])),
    "size(self.metadata.name) <= 63": lambda s: len(s["metadata"]["name"]) <= 63,
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']":
        lambda s: s in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"),
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')":
        lambda s: s == "" or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$", s)),
    "has(self.lastUpdatedTime)": lambda s: _has(s, "lastUpdatedTime"),
    # trainingruntime_types.go (MLPolicy, flux, torch env injection)
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)]"
    ".filter(x, x).size() <= 1":
        lambda s: sum(_has(s, k) for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost)].filter(x, x).size() <= 1":
        lambda s: sum(_has(s, k) for k in ("torch", "mpi", "jax", "xgboost")) <= 1,
    "[has(self.torch), has(self.mpi)].filter(x, x).size() <= 1":
        lambda s: sum(_has(s, k) for k in ("torch", "mpi")) <= 1,
    "self >= 1": lambda s: s >= 1,
    "!self.exists(c, c == 'node')": lambda s: "node" not in s,
    # jobset v0.12.0 api/jobset/v1alpha2/jobset_types.go (embedded in the runtimes' template)
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))":
        lambda s: not (_has(s, "startupPolicy")
                       and s["startupPolicy"].get("startupPolicyOrder") == "InOrder"
                       and any("dependsOn" in r for r in s.get("replicatedJobs", []))),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)":
        lambda s: all(not (t.get("metadata") or {}).get("namespace")
                      for t in s.get("templates", [])),
}


def _walk(schema: dict, value: Any, path: str, errors: list[str], unknown: set[str]) -> None:
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule["rule"]
        if "oldSelf" in text:
            continue  # transition rule: evaluated on update only
        check = CEL.get(text)
        if check is None:
            unknown.add(f"{path or '<root>'}: {text}")
        elif not check(value):
            errors.append(f"{path or '<root>'}: {rule.get('message') or text}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                _walk(props[key], sub, f"{path}.{key}", errors, unknown)
            elif isinstance(extra, dict):
                _walk(extra, sub, f"{path}.{key}", errors, unknown)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = [tuple(item.get(k) for k in schema.get("x-kubernetes-list-map-keys", []))
                    for item in value]
            if len(keys) != len(set(keys)):
                errors.append(f"{path}: duplicate entries for list-map keys {keys}")
        elif list_type == "set" and len({repr(v) for v in value}) != len(value):
            errors.append(f"{path}: duplicate entries in a set")
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", errors, unknown)


def schema_errors(obj: dict, trainer: str) -> list[str]:
    """Every reason the API server (CRDs of ``trainer``'s setup) would reject ``obj`` on create."""
    schema = schema_for(trainer, obj.get("apiVersion", ""), obj.get("kind", ""))
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
              for e in _validator(trainer, obj["apiVersion"], obj["kind"]).iter_errors(obj)]
    cluster_scoped = obj["kind"] == "ClusterTrainingRuntime"
    errors += metadata_errors(obj.get("metadata") or {}, cluster_scoped)
    unknown: set[str] = set()
    _walk(schema, obj, "", errors, unknown)
    errors += [f"CEL rule with no evaluator here (add one to CEL): {u}" for u in sorted(unknown)]
    return errors


# ---------------------------------------------------------------- controller rules

# trainer v2.3.0 pkg/constants/constants.go: TorchRunReservedEnvNames (the torch plugin rejects a
# TrainJob that sets them, pkg/runtime/framework/plugins/torch/torch.go Validate)
TORCH_RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                      "PET_MASTER_PORT"}
_DOMAIN_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/"
                          r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")


def runtime_jobs(runtime: dict) -> dict[str, set[str]]:
    """Replicated job name -> its container and init container names."""
    out = {}
    for rjob in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        pod = rjob["template"]["spec"]["template"]["spec"]
        out[rjob["name"]] = {c["name"] for c in pod.get("containers", []) + pod.get("initContainers", [])}
    return out


def trainer_admission(trainjob: dict, runtime: dict) -> list[str]:
    """The Trainer webhook's create checks (v2.2.0 and v2.3.0 pkg/webhooks/trainjob_webhook.go ->
    runtime.ValidateObjects: plugins/jobset/jobset.go, plugins/torch/torch.go, plugins/mpi/mpi.go)."""
    errors = []
    spec, policy = trainjob["spec"], runtime["spec"].get("mlPolicy") or {}
    jobs = runtime_jobs(runtime)
    if "torch" in policy:
        reserved = {e["name"] for e in (spec.get("trainer") or {}).get("env") or []} & TORCH_RESERVED_ENV
        if reserved:
            errors.append(f"spec.trainer.env: must not have reserved envs {sorted(reserved)}")
    if "mpi" in policy and not {"launcher", "node"} <= set(jobs):
        errors.append("MPI runtime must have launcher and node replicated jobs")
    for patch in spec.get("runtimePatches") or []:
        if not _DOMAIN_PATH.match(patch.get("manager", "")):
            errors.append(f"runtimePatches.manager {patch.get('manager')!r}: not a domain-prefixed path")
        tmpl = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
        for rjob in tmpl.get("replicatedJobs") or []:
            if rjob["name"] not in jobs:
                errors.append(f"runtimePatches: replicated job {rjob['name']!r} not in the runtime")
                continue
            pod = (((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if c["name"] not in jobs[rjob["name"]]:
                    errors.append(f"runtimePatches: container {c['name']!r} not in job {rjob['name']}")
                elif c.get("env") and c["name"] in ("node", "dataset-initializer", "model-initializer"):
                    errors.append(f"runtimePatches: env on container {c['name']!r}")
    return errors


def controller_names(obj: dict, runtime: dict | None = None) -> dict[str, list[str]]:
    """Every object name the controllers derive from a job, by the rule that limits it.

    - TrainJob (trainer v2.3.0 plugins/jobset/builder.go): a JobSet named like the TrainJob with
      the runtime's replicated jobs; the trainer's ``numNodes`` becomes the ancestor-``trainer``
      job's parallelism and completions. MPI (plugins/mpi/mpi.go): Secret ``<name>-mpi-ssh-auth``
      and ConfigMap ``<name>-mpi-hostfile``.
    - JobSet v0.12.0 (pkg/webhooks/jobset_webhook.go, pkg/controllers/jobset_controller.go):
      Jobs ``<jobset>-<rjob>-<jobIndex>``, Pods ``<job>-<podIndex>-<5 random>`` (both must be
      DNS-1035 labels), pod hostnames ``<job>-<podIndex>`` and the headless Service ``<jobset>``.
    - PyTorchJob (training-operator v1.9.0 pkg/controller.v1/common): a Pod and a Service per
      replica, ``<name>-<replica type lowercased>-<index>``.
    """
    name = obj["metadata"]["name"]
    labels: list[str] = []
    subdomains: list[str] = []
    if obj["kind"] == "PyTorchJob":
        for rtype, rspec in obj["spec"]["pytorchReplicaSpecs"].items():
            last = int(rspec.get("replicas", 1)) - 1
            labels.append(f"{name}-{rtype.lower()}-{last}")  # pod, Service, hostname
        return {"dns1035_label": labels, "dns1123_subdomain": subdomains}
    nodes = int(obj["spec"].get("trainer", {}).get("numNodes") or runtime["spec"]["mlPolicy"].get("numNodes", 1))
    labels.append(name)  # the JobSet's headless Service (network.subdomain defaults to its name)
    for rjob in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        ancestor = ((rjob["template"].get("metadata") or {}).get("labels") or {}).get(
            "trainer.kubeflow.org/trainjob-ancestor-step")
        replicas = int(rjob.get("replicas", 1))
        completions = nodes if (ancestor == "trainer" and "mpi" not in runtime["spec"]["mlPolicy"]) \
            or (rjob["name"] == "node" and "mpi" in runtime["spec"]["mlPolicy"]) else \
            int(rjob["template"]["spec"].get("completions", 1))
        if "mpi" in runtime["spec"]["mlPolicy"] and rjob["name"] == "node" and \
                runtime["spec"]["mlPolicy"]["mpi"].get("runLauncherAsNode"):
            completions = max(nodes - 1, 1)
        job = f"{name}-{rjob['name']}-{replicas - 1}"
        labels += [job, f"{job}-{completions - 1}", f"{job}-{completions - 1}-abcde"]
    if "mpi" in runtime["spec"]["mlPolicy"]:
        subdomains += [f"{name}-mpi-ssh-auth", f"{name}-mpi-hostfile"]
    return {"dns1035_label": labels, "dns1123_subdomain": subdomains}


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def name_errors(names: dict[str, list[str]]) -> list[str]:
    errors = [f"{n!r} ({len(n)} chars) is not a DNS-1035 label of at most 63 characters"
              for n in names["dns1035_label"] if len(n) > 63 or not _DNS1035.match(n)]
    errors += [f"{n!r} is not a DNS-1123 subdomain" for n in names["dns1123_subdomain"]
               if len(n) > 253 or not _DNS1123_SUB.match(n)]
    return errors
