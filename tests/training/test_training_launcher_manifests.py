"""The launcher's job manifests, names and config, checked against the real API shapes.

TrainJob: round-tripped through the Kubeflow Trainer SDK's generated API models
(``kubeflow_trainer_api``, installed with ``kubeflow==0.5.0``; generated from kubeflow/trainer
``pkg/apis/trainer/v1alpha1``), which drop any field the API does not have and enforce types, so
``from_dict(m).to_dict() == m`` holds only for a manifest made of real fields.
PyTorchJob: top-level fields from kubeflow/training-operator release-1.9
``pkg/apis/kubeflow.org/v1/pytorch_types.go`` and ``common_types.go``; the pod templates
round-tripped through the core/v1 PodTemplateSpec model.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kubeflow_trainer_api import models

from longalign.cli import _config
from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.training.launcher import build_manifest, is_valid_name, job_name, parse_launcher_config
from longalign.training.launcher import rank_env
from longalign.training.launcher.manifests import run_paths

# The TrainJob CRD's CEL rules on metadata.name (trainjob_types.go).
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# PyTorchJobSpec and RunPolicy JSON fields (training-operator v1).
PYTORCHJOB_SPEC_FIELDS = {"runPolicy", "elasticPolicy", "pytorchReplicaSpecs", "nprocPerNode"}
RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
                     "backoffLimit", "schedulingPolicy", "suspend", "managedBy"}
REPLICA_SPEC_FIELDS = {"replicas", "template", "restartPolicy"}

TRAINING = TrainingConfig(loss="token", learning_rate=3e-5, epochs=3, max_steps=7).model_dump(mode="json")


def manifest(**launcher):
    cfg = parse_launcher_config(launcher)
    name = job_name("run-42", cfg.name_prefix)
    return cfg, build_manifest(cfg, name=name, namespace="team-a", run_id="run-42", image="reg/img:1",
                               training=TRAINING, base_model="meta-llama/Llama-3.1-8B")


def all_strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_strings(v)
    else:
        yield str(obj)


def test_trainjob_is_made_of_real_v1alpha1_fields():
    cfg, m = manifest(num_nodes=4, gpus_per_node=8, cpu="64", memory="900Gi",
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                      node_selector={"gpu": "h100"}, service_account="trainer")
    assert models.TrainerV1alpha1TrainJob.from_dict(m).to_dict() == m
    broken = yaml.safe_load(yaml.safe_dump(m))
    broken["spec"]["trainer"]["numGpus"] = 8  # a field the API does not have is detected
    assert models.TrainerV1alpha1TrainJob.from_dict(broken).to_dict() != broken
    assert (m["apiVersion"], m["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert m["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                       "kind": "ClusterTrainingRuntime"}
    trainer = m["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8 and trainer["image"] == "reg/img:1"
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "900Gi"},
                                           "requests": {"cpu": "64", "memory": "900Gi"}}
    assert m["spec"]["activeDeadlineSeconds"] == cfg.timeout_seconds
    name = m["metadata"]["name"]
    assert RFC1035.match(name) and len(name) <= 63


def test_trainjob_mounts_the_shared_pvc_on_the_runtime_node_container():
    cfg, m = manifest(pvc="shared-rwx", mount_path="/data/", shm_size="32Gi")
    (patch,) = m["spec"]["runtimePatches"]
    jobs = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == ["node"]  # torch-distributed's replicated job
    pod = jobs[0]["template"]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-rwx"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert container["name"] == "node"  # the runtime's trainer container
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    names = {v["name"] for v in pod["volumes"]}
    assert {mnt["name"] for mnt in container["volumeMounts"]} <= names


def test_trainjob_command_runs_longalign_train_on_volume_paths_under_torchrun():
    cfg, m = manifest()
    cmd = m["spec"]["trainer"]["command"]
    assert cmd[:4] == ["torchrun", "-m", "longalign.cli", "train"]
    root = run_paths(cfg, m["metadata"]["name"]).root
    assert root == f"/mnt/longalign/runs/{m['metadata']['name']}"
    assert cmd[cmd.index("--packed") + 1] == f"{root}/packed"
    assert cmd[cmd.index("--output") + 1] == f"{root}/model"
    assert cmd[cmd.index("--base-model") + 1] == "meta-llama/Llama-3.1-8B"


def test_training_section_survives_the_trip_through_the_command_line():
    _, m = manifest()
    cmd = m["spec"]["trainer"]["command"]
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    assert len(sets) == len(TRAINING)
    # Parsed by the real CLI, whatever the preset says, the job trains with exactly our section,
    # except that it always resumes from this run's own checkpoints (if there are any).
    expected = {**TRAINING, "resume": True} if "resume" in TRAINING else TRAINING
    for preset in ("default", "tiny"):
        parsed = _config(preset, None, sets, "training")
        assert parsed.training.model_dump(mode="json") == expected


def test_secrets_are_references_never_values():
    _, m = manifest(env={"NCCL_DEBUG": "INFO"}, env_from_secrets={"HF_TOKEN": "hf-credentials/token"})
    env = m["spec"]["trainer"]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-credentials", "key": "token"}}} in env
    assert {"name": "NCCL_DEBUG", "value": "INFO"} in env
    assert all("value" not in e for e in env if e["name"] == "HF_TOKEN")
    with pytest.raises(UserError, match="looks like a secret"):
        parse_launcher_config({"env": {"HF_TOKEN": "hf_abc"}})
    with pytest.raises(UserError, match="secret-name/key"):
        parse_launcher_config({"env_from_secrets": {"HF_TOKEN": "no-key"}})


def test_mpi_runtime_patches_launcher_and_nodes_and_runs_ranks_through_rank_env():
    cfg, m = manifest(runtime="deepspeed-distributed", num_nodes=2, gpus_per_node=4,
                      env_from_secrets={"HF_TOKEN": "hf/token"})
    assert models.TrainerV1alpha1TrainJob.from_dict(m).to_dict() == m
    jobs = m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert sorted(j["name"] for j in jobs) == ["launcher", "node"]  # deepspeed-distributed's jobs
    cmd = m["spec"]["trainer"]["command"]
    assert cmd[:3] == ["mpirun", "--hostfile", "/etc/mpi/hostfile"]
    forwarded = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-x"}
    assert {"PATH", "HF_TOKEN", "HF_HOME", "PYTHONUNBUFFERED"} <= forwarded
    i = cmd.index("longalign.training.launcher.rank_env")
    assert cmd[i + 1:i + 4] == ["--hostfile", "/etc/mpi/hostfile", "--"]
    assert cmd[i + 4:i + 8] == ["python", "-m", "longalign.cli", "train"]
    assert m["spec"]["trainer"]["numProcPerNode"] == 4


def test_pytorchjob_is_made_of_real_v1_fields():
    cfg, m = manifest(kind="pytorchjob", num_nodes=3, gpus_per_node=8, env_from_secrets={"HF_TOKEN": "hf/token"})
    assert (m["apiVersion"], m["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = m["spec"]
    assert set(spec) <= PYTORCHJOB_SPEC_FIELDS and set(spec["runPolicy"]) <= RUN_POLICY_FIELDS
    assert spec["nprocPerNode"] == "8"  # a string in v1 (int or auto/cpu/gpu)
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for rep in replicas.values():
        assert set(rep) <= REPLICA_SPEC_FIELDS and rep["restartPolicy"] == "Never"
        template = rep["template"]
        assert models.IoK8sApiCoreV1PodTemplateSpec.from_dict(template).to_dict() == template
        (container,) = template["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator's required container name
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["command"][:4] == ["torchrun", "-m", "longalign.cli", "train"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "longalign-data"}} in template["spec"]["volumes"]
    _, single = manifest(kind="pytorchjob", num_nodes=1)
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_config_refuses_mistakes_in_one_line():
    for bad, words in [({"kind": "pytorchjob", "runtime": "deepspeed-distributed"}, "TrainJob runtime"),
                       ({"mount_path": "data"}, "absolute"),
                       ({"pvc": "Bad_Name"}, "DNS"),
                       ({"num_nodes": 0}, "num_nodes"),
                       ({"gpus": 8}, "gpus"),
                       ({"env": {"A": "1"}, "env_from_secrets": {"A": "s/k"}}, "both")]:
        with pytest.raises(UserError, match=words) as info:
            parse_launcher_config(bad)
        assert "\n" not in str(info.value)


def test_cpu_jobs_ask_for_no_gpus():
    _, m = manifest(gpus_per_node=0, procs_per_node=2)
    assert "resourcesPerNode" not in m["spec"]["trainer"]
    assert m["spec"]["trainer"]["numProcPerNode"] == 2


@pytest.mark.parametrize("run_id", ["4f8c1e2a-9b7d-4c3e-8a1f-0123456789ab", "Run_1", "run-1", "1234",
                                    "x" * 300, "--", "ünïcödé run", "a.b.c"])
def test_job_names_are_valid_rfc1035_labels(run_id):
    name = job_name(run_id)
    assert is_valid_name(name) and RFC1035.match(name) and len(name) <= 63
    assert name == job_name(run_id)  # deterministic: a restarted launcher finds its job


def test_job_names_differ_where_the_readable_part_collides():
    assert job_name("Run_1") != job_name("run-1")
    assert job_name("x" * 100 + "a") != job_name("x" * 100 + "b")
    assert job_name("r", attempt="1") != job_name("r", attempt="2")
    with pytest.raises(ValueError):
        job_name("")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=80), min_size=2, max_size=5, unique=True),
       st.sampled_from(["longalign", "la", "a" * 20]))
def test_job_names_unique_and_valid_for_any_run_ids(run_ids, prefix):
    names = [job_name(r, prefix) for r in run_ids]
    assert len(set(names)) == len(names)
    assert all(is_valid_name(n) for n in names)


def test_rank_env_maps_open_mpi_ranks_for_torch_distributed(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# generated\njob-launcher-0-0.job slots=4\njob-node-0-0.job slots=4\n")
    env = {**os.environ, "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    # Run as a file: `-m` would first import longalign.training (torch, transformers), which
    # costs seconds here and changes nothing about this module's behaviour.
    script = str(Path(rank_env.__file__))
    show = "import os; print(' '.join(os.environ[k] for k in ['RANK','WORLD_SIZE','LOCAL_RANK','LOCAL_WORLD_SIZE','MASTER_ADDR','MASTER_PORT']))"
    out = subprocess.run([sys.executable, script, "--hostfile", str(hostfile),
                          "--", sys.executable, "-c", show], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "8", "1", "4", "job-launcher-0-0.job", "29500"]
    del env["OMPI_COMM_WORLD_RANK"]
    out = subprocess.run([sys.executable, script, "--hostfile", str(hostfile),
                          "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "OMPI_COMM_WORLD_RANK" in out.stderr


def test_pipeline_parameters_fill_the_launcher_config_but_never_contradict_it():
    base = {"gpus_per_node": 8, "pvc": "from-config", "node_selector": {"pool": "a100"}}
    cfg = parse_launcher_config(base, {"pvc": ""})  # "" is "not given"
    assert (cfg.pvc, cfg.gpus_per_node, cfg.node_selector) == ("from-config", 8, {"pool": "a100"})
    assert parse_launcher_config(base, {"pvc": "from-config"}).pvc == "from-config"
    assert parse_launcher_config({"gpus_per_node": 8}, {"pvc": "other"}).pvc == "other"
    with pytest.raises(UserError, match="launcher.pvc='from-config' contradicts the pipeline parameter"):
        parse_launcher_config(base, {"pvc": "other"})
    _, m = manifest(gpus_per_node=4, gpu_resource="amd.com/gpu")
    assert m["spec"]["trainer"]["resourcesPerNode"] == {"limits": {"amd.com/gpu": "4"}}
    with pytest.raises(UserError, match="extended resource"):
        parse_launcher_config({"gpu_resource": "gpu"})


def test_volume_patch_merges_with_the_project_runtime(tmp_path):
    """k8s/runtime's longalign-deepspeed runtime already mounts the volume and /dev/shm; the
    Trainer merges runtime patches strategically (volumes by name, mounts by mountPath), so ours
    must use the same names for the same paths, or the pod would mount one path twice."""
    runtime_file = Path(__file__).resolve().parents[2] / "k8s" / "runtime" / "deepspeed-runtime.yaml"
    if not runtime_file.is_file():
        pytest.skip("no k8s/runtime in this checkout")
    runtime = yaml.safe_load(runtime_file.read_text())
    (node,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"]
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "node"]
    _, m = manifest(runtime=runtime["metadata"]["name"])
    patch = m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    ours = patch["template"]["spec"]["template"]["spec"]
    theirs_by_path = {v["mountPath"]: v["name"] for v in container.get("volumeMounts", [])}
    for mount in ours["containers"][0]["volumeMounts"]:
        if mount["mountPath"] in theirs_by_path:
            assert theirs_by_path[mount["mountPath"]] == mount["name"]
    theirs_volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for volume in ours["volumes"]:
        if volume["name"] in theirs_volumes and "persistentVolumeClaim" in volume:
            assert theirs_volumes[volume["name"]]["persistentVolumeClaim"] == volume["persistentVolumeClaim"]
