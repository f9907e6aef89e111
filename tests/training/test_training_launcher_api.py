"""The launcher against the fake Kubernetes API server of kube_fake.py (a real HTTP server on
127.0.0.1): create, adopt, wait, logs, failure, timeout, SIGTERM, the end-to-end launch."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import yaml
from kube_fake import COMPLETE, FAILED, NS, RUNNING_PT, SUCCEEDED_PT, make, trainjob_pod

from longalign.training.launcher import (JobFailed, JobTimeout, KubeJobs, LaunchCancelled, job_name,
                                         launch_training, parse_launcher_config)
from longalign.training.launcher.jobs import job_status


def test_succeeded_trainjob_is_created_on_the_real_path_and_its_logs_streamed(kube):
    fake, api = kube
    cfg, name, m = make()
    fake.scripts[name] = [None, {"conditions": [{"type": "Created", "status": "True"}]}] + [
        {"conditions": [{"type": "Created", "status": "True"}]}] * 4 + [COMPLETE]
    fake.pods += [trainjob_pod(f"{name}-node-0-0-abc", name, 0, log="step 1 loss 2.5\nstep 2 loss 1.9\n"),
                  trainjob_pod(f"{name}-node-0-1-def", name, 1, log="rank 1 noise\n")]
    lines = []
    status = KubeJobs(cfg, api, NS, lines.append).run(m)
    assert status.state == "succeeded" and status.reason == "JobSetCompleted"
    method, path, _, body = fake.requests[0]
    assert (method, path) == ("POST", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs")
    assert body == m
    assert any(r[:2] == ("GET", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}")
               for r in fake.requests)
    assert f"[{name}-node-0-0-abc] step 2 loss 1.9" in lines  # rank 0's log, line by line
    assert not any("rank 1 noise" in line for line in lines)
    logs = [r for r in fake.requests if r[1].endswith("/log")]
    assert logs and logs[0][2]["container"] == "node"
    # cleanup: the succeeded job is deleted once, after its log was read
    deletes = [i for i, r in enumerate(fake.requests) if r[0] == "DELETE"]
    assert len(deletes) == 1 and fake.requests[deletes[0]][1].endswith(f"/trainjobs/{name}")
    assert deletes[0] > max(i for i, r in enumerate(fake.requests) if r[1].endswith("/log"))
    assert any("succeeded; deleting it" in line for line in lines)


def test_failed_trainjob_raises_with_the_failure_reason_and_shows_the_pod_log(kube):
    fake, api = kube
    cfg, name, m = make()
    fake.scripts[name] = [None, FAILED]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-x", name, 0, phase="Failed",
                                  log="Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n",
                                  ) | {"after": 2})
    lines = []
    with pytest.raises(JobFailed, match="JobSetFailed: jobset failed: node-0 exited with code 1"):
        KubeJobs(cfg, api, NS, lines.append).run(m)
    assert any("CUDA out of memory" in line for line in lines)  # the pod ended between polls
    assert not any(r[0] == "DELETE" for r in fake.requests)  # kept for inspection by default


def test_failed_job_is_deleted_when_configured(kube):
    fake, api = kube
    cfg, name, m = make(delete_on_failure=True)
    fake.scripts[name] = [FAILED]
    with pytest.raises(JobFailed):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    (delete,) = [r for r in fake.requests if r[0] == "DELETE"]
    assert delete[1].endswith(f"/trainjobs/{name}")


def test_timeout_raises_and_deletes_the_abandoned_job(kube):
    fake, api = kube
    cfg, name, m = make(timeout_seconds=1, poll_seconds=0.1)
    fake.scripts[name] = [{"conditions": [{"type": "Created", "status": "True"}]}]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-abcde", name))  # started, never finishes
    started = time.monotonic()
    with pytest.raises(JobTimeout, match=f"{name} did not finish within 1 s"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    assert time.monotonic() - started < 10
    deletes = [r for r in fake.requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and deletes[0][3]["propagationPolicy"] == "Background"


def test_pytorchjob_fallback_on_its_own_api_path_and_labels(kube):
    fake, api = kube
    cfg, name, m = make(kind="pytorchjob", num_nodes=2)
    fake.scripts[name] = [None, RUNNING_PT, RUNNING_PT, RUNNING_PT, SUCCEEDED_PT]
    labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master",
              "training.kubeflow.org/replica-index": "0"}
    fake.pods.append({"job": name, "name": f"{name}-master-0", "phase": "Running", "container": "pytorch",
                      "labels": labels, "log": "master says hi\n"})
    fake.pods.append({"job": name, "name": f"{name}-worker-0", "phase": "Running", "container": "pytorch",
                      "labels": dict(labels, **{"training.kubeflow.org/replica-type": "worker"}),
                      "log": "worker noise\n"})
    lines = []
    assert KubeJobs(cfg, api, NS, lines.append).run(m).state == "succeeded"
    assert fake.requests[0][1] == f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
    assert f"[{name}-master-0] master says hi" in lines
    assert not any("worker noise" in line for line in lines)
    # the phase comes from the operator's pods (their labels, not JobSet's)
    assert f"[launcher] {name}: running (2/2 pods running)" in lines, lines


def test_existing_job_of_the_same_run_is_adopted_and_a_failed_one_replaced(kube):
    fake, api = kube
    cfg, name, m = make(delete_on_success=False)
    path = f"apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}"
    fake.objects[path] = m
    fake.scripts[name] = [COMPLETE]
    assert KubeJobs(cfg, api, NS, lambda s: None).run(m).state == "succeeded"
    assert [r[0] for r in fake.requests].count("POST") == 1 and not any(r[0] == "DELETE" for r in fake.requests)

    fake.requests.clear()
    fake.scripts[name] = [FAILED]
    replaced = []
    fake.on_status[(name, json.dumps(FAILED, sort_keys=True))] = lambda: replaced.append(True)
    job = KubeJobs(cfg, api, NS, lambda s: None)
    assert job.create(m) == "replaced"
    methods = [r[0] for r in fake.requests]
    assert methods[:2] == ["POST", "GET"] and "DELETE" in methods and methods[-1] == "POST"
    (delete,) = [r for r in fake.requests if r[0] == "DELETE"]
    assert delete[3]["propagationPolicy"] == "Foreground"  # old pods gone before new ones


def test_job_of_another_run_with_the_same_name_is_not_touched(kube):
    fake, api = kube
    cfg, name, m = make()
    other = yaml.safe_load(yaml.safe_dump(m))
    other["metadata"]["annotations"]["longalign.io/run-id"] = "someone-else"
    fake.objects[f"apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}"] = other
    with pytest.raises(RuntimeError, match="belongs to another run"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    assert not any(r[0] == "DELETE" for r in fake.requests)


def test_forbidden_create_points_at_rbac(kube):
    fake, api = kube
    cfg, name, m = make()
    fake.create_status = 403
    with pytest.raises(RuntimeError, match="may not create trainjobs.trainer.kubeflow.org in namespace team-a"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)


def test_sigterm_deletes_the_job_and_restores_the_handler(kube):
    fake, api = kube
    cfg, name, m = make(poll_seconds=0.05)
    fake.scripts[name] = [{"conditions": [{"type": "Created", "status": "True"}]}]
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_watching():
        deadline = time.monotonic() + 30
        while fake.gets.get(name, 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # as the kubelet does when the KFP run is cancelled

    threading.Thread(target=terminate_once_watching, daemon=True).start()
    with pytest.raises(LaunchCancelled, match="signal 15"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    deletes = [r for r in fake.requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and deletes[0][1].endswith(f"/trainjobs/{name}")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_without_cleanup_leaves_the_job(kube):
    fake, api = kube
    cfg, name, m = make(poll_seconds=0.05, delete_on_cancel=False)
    fake.scripts[name] = [None]
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(LaunchCancelled):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    assert not any(r[0] == "DELETE" for r in fake.requests)


@pytest.mark.slow
def test_sigterm_to_a_launcher_process_deletes_the_job(kube, tmp_path):
    fake, api = kube
    cfg, name, m = make(poll_seconds=0.1, timeout_seconds=120)
    fake.scripts[name] = [{"conditions": [{"type": "Created", "status": "True"}]}]
    (tmp_path / "m.json").write_text(json.dumps(m))
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from kubernetes import client
        from longalign.training.launcher.config import parse_launcher_config
        from longalign.training.launcher.jobs import KubeJobs
        cfg = parse_launcher_config(json.load(open({str(tmp_path / "cfg.json")!r})))
        api = client.ApiClient(client.Configuration(host={api.configuration.host!r}))
        KubeJobs(cfg, api, {NS!r}, print).run(json.load(open({str(tmp_path / "m.json")!r})))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not fake.gets.get(name) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert fake.gets.get(name), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "LaunchCancelled" in err and "received signal 15" in err
    deletes = [r for r in fake.requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and deletes[0][1].endswith(f"/trainjobs/{name}")


@pytest.mark.parametrize("copy_model", [False, True])
def test_launch_training_end_to_end(kube, tmp_path, copy_model):
    fake, api = kube
    volume = tmp_path / "volume"
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "rows.arrow").write_bytes(b"arrow-bytes")
    launcher = {"namespace": NS, "poll_seconds": 0.05, "num_nodes": 2, "gpus_per_node": 8,
                "copy_model": copy_model}
    name = job_name("run-9")
    root = volume / "runs" / name

    def training_pods_write_the_checkpoint():  # what `longalign train` does on the volume
        (root / "model").mkdir(parents=True)
        (root / "model" / "stats.json").write_text(json.dumps({"metrics": {"final_loss": 1.25, "steps": 3}}))
        (root / "model" / "summary.md").write_text("# trained\n")
        (root / "model" / "model.safetensors").write_bytes(b"weights")

    fake.scripts[name] = [None, COMPLETE]
    fake.on_status[(name, json.dumps(COMPLETE, sort_keys=True))] = training_pods_write_the_checkpoint
    stats = launch_training({"epochs": 1}, launcher, "embedded:tiny", packed, "run-9", tmp_path / "model",
                            tmp_path / "manifest.yaml", default_image="img:default",
                            default_gpu_image="img:cuda", api_client=api,
                            volume_root=volume, sink=lambda s: None)
    submitted = fake.requests[0][3]
    assert yaml.safe_load((tmp_path / "manifest.yaml").read_text()) == submitted
    assert yaml.safe_load((root / "job.yaml").read_text()) == submitted
    assert submitted["spec"]["trainer"]["image"] == "img:cuda"  # GPUs asked for: the GPU image
    assert (root / "packed" / "rows.arrow").read_bytes() == b"arrow-bytes"  # staged for the nodes
    pointer = json.loads((tmp_path / "model" / "pointer.json").read_text())
    assert pointer["path"] == f"/mnt/longalign/runs/{name}/model"
    assert pointer["uri"] == f"pvc://longalign-data/runs/{name}/model"
    assert stats["model_metadata"] == pointer and stats["job_name"] == name
    assert stats["metrics"]["final_loss"] == 1.25 and stats["metrics"]["num_nodes"] == 2
    assert (tmp_path / "model" / "summary.md").read_text() == "# trained\n"
    # The checkpoint stays on the volume unless copy_model asks for it in the artifact too.
    assert (tmp_path / "model" / "model.safetensors").exists() == copy_model


def test_launch_training_fails_when_the_job_wrote_no_checkpoint(kube, tmp_path):
    fake, api = kube
    (tmp_path / "packed").mkdir()
    name = job_name("run-10")
    fake.scripts[name] = [COMPLETE]
    with pytest.raises(RuntimeError, match="succeeded but wrote no"):
        launch_training({}, {"namespace": NS, "poll_seconds": 0.05}, "embedded:tiny", tmp_path / "packed",
                        "run-10", tmp_path / "model", tmp_path / "m.yaml", default_image="img",
                        api_client=api, volume_root=tmp_path / "volume", sink=lambda s: None)
    assert not (tmp_path / "model").exists()


def test_outside_a_cluster_without_credentials_or_namespace_is_a_user_error(tmp_path, monkeypatch):
    from longalign.errors import UserError
    from longalign.training.launcher.run import kube_api_client, resolve_namespace

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no Kubernetes credentials"):
        kube_api_client()
    with pytest.raises(UserError, match="launcher.namespace is not set"):
        resolve_namespace(parse_launcher_config({}), sa_file=str(tmp_path / "namespace"))
    (tmp_path / "namespace").write_text("team-b\n")
    assert resolve_namespace(parse_launcher_config({}), sa_file=str(tmp_path / "namespace")) == "team-b"


def test_api_blips_while_waiting_are_retried_but_a_vanished_job_is_an_error(kube):
    fake, api = kube
    cfg, name, m = make()
    fake.scripts[name] = [None, None, COMPLETE]
    fake.fail_gets[name] = [500, 503, 500]
    lines = []
    assert KubeJobs(cfg, api, NS, lines.append).run(m).state == "succeeded"
    assert sum("retrying" in line for line in lines) == 3

    cfg, name, m = make()
    fake.objects.clear()
    fake.scripts[name] = [None]
    fake.fail_gets[name] = [404]  # deleted by someone else
    job = KubeJobs(cfg, api, NS, lambda s: None)
    job.create(m)
    with pytest.raises(RuntimeError, match="disappeared"):
        job.wait(name)


def _cond(ctype, status="True", reason="", message=""):
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T12:00:00Z"}


@pytest.mark.parametrize("kind,conditions,expected", [
    ("trainjob", None, ("pending", "", "")),
    ("trainjob", [_cond("Suspended", reason="Suspended", message="TrainJob is suspended")],
     ("suspended", "Suspended", "TrainJob is suspended")),
    ("trainjob", [_cond("Suspended", "False", "Resumed")], ("pending", "", "")),  # resumed, nothing else yet
    ("trainjob", [_cond("Suspended", "False", "Resumed"), _cond("Created", reason="JobSetCreated")],
     ("running", "", "")),
    ("trainjob", [_cond("Complete", "False"), _cond("Created")], ("running", "", "")),
    ("trainjob", [_cond("Created"), _cond("Complete", reason="JobSetCompleted", message="jobset completed")],
     ("succeeded", "JobSetCompleted", "jobset completed")),
    ("trainjob", [_cond("Complete", reason="JobSetCompleted"), _cond("Failed", reason="JobSetFailed", message="x")],
     ("failed", "JobSetFailed", "x")),  # failed wins
    ("trainjob", [_cond("Succeeded", reason="PyTorchJobSucceeded")], ("running", "", "")),  # not a TrainJob's end
    ("trainjob", [_cond("Suspended", reason="Suspended"), _cond("Failed", reason="DeadlineExceeded")],
     ("failed", "DeadlineExceeded", "")),
    ("trainjob", [{"type": "Failed", "status": "True"}], ("failed", "", "")),  # no reason or message given
    ("trainjob", [{"type": "Suspended", "status": "True"}], ("suspended", "", "")),
    ("pytorchjob", [_cond("Created"), _cond("Running", "False"), _cond("Restarting", reason="PyTorchJobRestarting")],
     ("running", "", "")),
    ("pytorchjob", [_cond("Running", "False"), _cond("Succeeded", reason="PyTorchJobSucceeded", message="done")],
     ("succeeded", "PyTorchJobSucceeded", "done")),
    ("pytorchjob", [_cond("Complete")], ("running", "", "")),  # a TrainJob's condition type
])
def test_job_status_from_the_conditions(kind, conditions, expected):
    """Only conditions with status "True" count; Failed wins over success; each kind ends with its
    own condition type (TrainJob: Complete, PyTorchJob: Succeeded); Suspended is reported with
    its reason; any other true condition means running, none pending."""
    obj = {"metadata": {"name": "j"}} | ({"status": {"conditions": conditions}} if conditions is not None else {})
    status = job_status(kind, obj)
    assert (status.state, status.reason, status.message) == expected
    assert status.terminal == (expected[0] in ("succeeded", "failed"))
