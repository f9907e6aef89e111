"""Jobs that never start, start failures, the real phase, cancel by deleting the launcher pod, and
success with cleanup, against the fake API server (kube_fake.py). The JobSet the fake serves is
checked against the upstream JobSet CRD, so the phase code reads the shape JobSet really writes."""

import json
import threading
import time

import pytest
from k8s_conformance import TRAINER_VERSIONS, schema_errors
from kube_fake import COMPLETE, NS, make, trainjob_pod

from longalign.training.launcher import KubeJobs, LaunchCancelled, job_name, launch_training
from longalign.training.launcher.jobs import JobStartFailed
from longalign.training.launcher.watch import observe

CREATED = {"conditions": [{"type": "Created", "status": "True", "reason": "JobSetCreated"}]}
UNSCHEDULABLE = ("0/12 nodes are available: 4 Insufficient nvidia.com/gpu, 8 node(s) didn't match "
                 "Pod's node affinity/selector. preemption: 0/12 nodes are available.")


def jobset(name, active=0, ready=0):
    """A JobSet as jobset v0.12.0 writes it (status.replicatedJobsStatus)."""
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicatedJobs": [{"name": "node", "replicas": 1, "template": {"spec": {
                "template": {"spec": {"containers": [{"name": "node", "image": "img:1"}]}}}}}]},
            "status": {"replicatedJobsStatus": [{"name": "node", "ready": ready, "succeeded": 0,
                                                 "failed": 0, "active": active, "suspended": 0}],
                       "terminalState": ""}}


def warning(reason, message, kind, name, when="2026-12-01T12:00:05Z"):
    return {"type": "Warning", "reason": reason, "message": message, "lastTimestamp": when,
            "involvedObject": {"kind": kind, "name": name, "namespace": NS}}


def deletes(fake):
    return [r for r in fake.requests if r[0] == "DELETE"]


def test_a_job_that_never_gets_pods_fails_at_the_start_deadline_with_the_warning(kube):
    fake, api = kube
    cfg, name, m = make(start_timeout_seconds=1, poll_seconds=0.1)
    fake.scripts[name] = [CREATED]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-q7x2k", name, phase="Pending"))
    fake.events.append(warning("FailedScheduling", UNSCHEDULABLE, "Pod", f"{name}-node-0-0-q7x2k"))
    fake.events.append(warning("FailedScheduling", "not ours", "Pod", "someone-else-0"))
    lines = []
    started = time.monotonic()
    with pytest.raises(JobStartFailed, match="did not start within 1 s: .*FailedScheduling: 0/12 nodes are "
                       r"available: 4 Insufficient nvidia.com/gpu"):
        KubeJobs(cfg, api, NS, lines.append).run(m)
    assert time.monotonic() - started < 20
    assert any(line.endswith(f"{name}: pods pending (0/1 pods running)") for line in lines)
    assert len(deletes(fake)) == 1  # nothing stays queued for GPUs after the task failed


def test_refused_resources_fail_at_once_with_the_trainer_event(kube):
    fake, api = kube
    cfg, name, m = make(start_timeout_seconds=30)
    fake.scripts[name] = [None]
    message = ("admission webhook \"vjobset.kb.io\" denied the request: spec.replicatedJobs[0]: "
               "Invalid value: ...: must be no more than 63 characters")
    fake.events.append(warning("TrainJobResourcesCreationFailed", message, "TrainJob", name))
    started = time.monotonic()
    with pytest.raises(JobStartFailed, match="cannot start: .*TrainJobResourcesCreationFailed: admission "
                       "webhook \"vjobset.kb.io\" denied the request"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    assert time.monotonic() - started < 15  # at the first look, not at the start deadline


@pytest.mark.parametrize("reason,where", [("ErrImagePull", "waiting"), ("ImagePullBackOff", "waiting"),
                                          ("ErrImagePull", "init_waiting")])
def test_an_image_pull_failure_fails_with_the_kubelet_message(kube, reason, where):
    """In the main container or in an init container (a pod whose init image cannot be pulled
    stays Pending for ever just the same)."""
    fake, api = kube
    cfg, name, m = make(start_timeout_seconds=30)
    fake.scripts[name] = [CREATED]
    pull = 'Back-off pulling image "registry.example/longalign-cuda:0.1.0-0123456789ab"'
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-a1b2c", name, phase="Pending") | {where: (reason, pull)})
    fake.pods.append(trainjob_pod(f"{name}-node-0-1-d3e4f", name, index=1, phase="Pending"))
    with pytest.raises(JobStartFailed, match=f"pod {name}-node-0-0-a1b2c: {reason}: Back-off pulling image"):
        KubeJobs(cfg, api, NS, lambda s: None).run(m)
    assert len(deletes(fake)) == 1


def test_the_fake_jobset_is_what_jobset_accepts():
    """The JobSet the phase tests serve has the shape JobSet v0.12.0 writes (its CRD's schema)."""
    for version in TRAINER_VERSIONS:
        assert schema_errors(jobset("longalign-run-7-0123abcd", active=1, ready=1), version) == []


def test_the_real_phase_is_logged_from_the_jobset_and_pods(kube):
    fake, api = kube
    cfg, name, m = make(delete_on_success=False)
    fake.scripts[name] = [CREATED] * 6 + [COMPLETE]
    fake.objects[f"apis/jobset.x-k8s.io/v1alpha2/namespaces/{NS}/jobsets/{name}"] = jobset(name, active=1)
    fake.pods += [trainjob_pod(f"{name}-node-0-0-aaaaa", name, phase="Pending") | {"after": 2},
                  trainjob_pod(f"{name}-node-0-1-bbbbb", name, index=1, phase="Running") | {"after": 4}]
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    phases = [line.split(f"{name}: ", 1)[1] for line in lines if line.startswith(f"[launcher] {name}: ")]
    assert phases[0] == "jobset created (no pods yet)"
    assert "pods pending (0/1 pods running)" in phases and "running (1/2 pods running)" in phases
    assert phases.index("pods pending (0/1 pods running)") < phases.index("running (1/2 pods running)")


def test_deleting_the_launcher_pod_cancels_and_deletes_the_job(kube):
    """A run cancel deletes the launcher pod; no signal need reach Python through `sh -ec`. The job
    names the pod as its owner (garbage collection deletes it even if the launcher is gone), and a
    launcher that sees its pod going away deletes the job itself."""
    fake, api = kube
    cfg, name, m = make(poll_seconds=0.05)
    owner = {"name": "longalign-multinode-x7k2p-launcher", "uid": "5c2d8f3e-0000-4000-8000-000000000001"}
    fake.own_pods[owner["name"]] = {"metadata": {"name": owner["name"], "namespace": NS, "uid": owner["uid"]},
                                    "status": {"phase": "Running"}}
    fake.scripts[name] = [CREATED]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-aaaaa", name))

    def cancel_run():
        deadline = time.monotonic() + 30
        while fake.gets.get(name, 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        fake.own_pods[owner["name"]]["metadata"]["deletionTimestamp"] = "2026-12-01T12:10:00Z"

    threading.Thread(target=cancel_run, daemon=True).start()
    with pytest.raises(LaunchCancelled, match="launcher pod is being deleted"):
        KubeJobs(cfg, api, NS, lambda s: None, owner=owner).run(m)
    assert len(deletes(fake)) == 1 and deletes(fake)[0][1].endswith(f"/trainjobs/{name}")


def test_the_job_is_owned_by_the_launcher_pod_and_a_retry_takes_it_over(kube, tmp_path):
    fake, api = kube
    env = {"LONGALIGN_POD_NAME": "run-abc-launcher-2", "LONGALIGN_POD_UID": "uid-2",
           "LONGALIGN_POD_NAMESPACE": NS}
    (tmp_path / "packed").mkdir()
    name = job_name("run-11")
    # the first attempt's pod created the job and was then retried by KFP
    path = f"apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{name}"
    fake.objects[path] = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {
        "name": name, "namespace": NS, "annotations": {"longalign.io/run-id": "run-11"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "run-abc-launcher-1", "uid": "uid-1"}]}}
    fake.scripts[name] = [CREATED, COMPLETE]
    fake.own_pods["run-abc-launcher-2"] = {"metadata": {"name": "run-abc-launcher-2", "uid": "uid-2"}}
    with pytest.raises(RuntimeError, match="wrote no"):  # no checkpoint in this test: ownership only
        launch_training({}, {"poll_seconds": 0.05, "delete_on_success": False}, "embedded:tiny",
                        tmp_path / "packed", "run-11", tmp_path / "model", tmp_path / "m.yaml",
                        default_image="img", api_client=api, volume_root=tmp_path / "vol",
                        sink=lambda s: None, environ=env)
    (patch,) = [r for r in fake.requests if r[0] == "PATCH"]
    assert patch[3] == {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "run-abc-launcher-2", "uid": "uid-2"}]}}
    assert fake.objects[path]["metadata"]["ownerReferences"][0]["uid"] == "uid-2"


def test_success_keeps_the_rank0_log_on_the_volume_then_deletes_the_job(kube, tmp_path):
    fake, api = kube
    (tmp_path / "packed").mkdir()
    volume = tmp_path / "volume"
    name = job_name("run-12")
    root = volume / "runs" / name

    def checkpoint():
        (root / "model").mkdir(parents=True)
        (root / "model" / "stats.json").write_text(json.dumps({"metrics": {"final_loss": 1.0}}))

    fake.scripts[name] = [None, CREATED, CREATED, CREATED, COMPLETE]
    fake.on_status[(name, json.dumps(COMPLETE, sort_keys=True))] = checkpoint
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-aaaaa", name, phase="Succeeded",
                                  log="step 1 loss 2.0\nstep 2 loss 1.0\n"))
    env = {"LONGALIGN_POD_NAME": "launcher-pod", "LONGALIGN_POD_UID": "uid-9", "LONGALIGN_POD_NAMESPACE": NS}
    fake.own_pods["launcher-pod"] = {"metadata": {"name": "launcher-pod", "uid": "uid-9"}}
    launch_training({}, {"poll_seconds": 0.05}, "embedded:tiny", tmp_path / "packed", "run-12",
                    tmp_path / "model", tmp_path / "m.yaml", default_image="img", api_client=api,
                    volume_root=volume, sink=lambda s: None, environ=env)
    post = next(r for r in fake.requests if r[0] == "POST")
    assert post[3]["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "launcher-pod", "uid": "uid-9"}]
    log = (root / "launcher.log").read_text()
    assert f"[{name}-node-0-0-aaaaa] step 2 loss 1.0" in log, log
    assert len(deletes(fake)) == 1 and not fake.objects  # cleaned up after the log was kept
    assert "deleting it" in log


def log_requests(fake, follow):
    return [r for r in fake.requests if r[1].endswith("/log")
            and (r[2].get("follow") in ("true", "True")) == follow]


def test_a_failed_log_stream_is_followed_again_while_the_pod_runs(kube):
    """A follow request that fails (kubelet restart, proxy timeout) is said, and the pod's log is
    followed again at the next poll: every line shows, once."""
    fake, api = kube
    cfg, name, m = make()
    fake.failed_follows = 1
    fake.scripts[name] = [None, CREATED, CREATED, CREATED, COMPLETE]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-aaaaa", name, log="step 1 loss 2.0\nstep 2 loss 1.0\n"))
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    assert any("log stream of" in line and "HTTP 500" in line for line in lines), lines
    for step in ("step 1 loss 2.0", "step 2 loss 1.0"):
        assert lines.count(f"[{name}-node-0-0-aaaaa] {step}") == 1, lines
    assert len(log_requests(fake, follow=True)) >= 2


def test_a_failed_log_stream_of_a_pod_that_ended_is_read_at_the_end(kube):
    fake, api = kube
    cfg, name, m = make()
    fake.failed_follows = 1
    fake.scripts[name] = [None, CREATED, COMPLETE]
    fake.pods.append(trainjob_pod(f"{name}-node-0-0-aaaaa", name, phase="Succeeded",
                                  log="step 1 loss 2.0\nstep 2 loss 1.0\n"))
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    assert lines.count(f"[{name}-node-0-0-aaaaa] step 2 loss 1.0") == 1, lines
    (tail,) = log_requests(fake, follow=False)  # nothing was shown: its last lines
    assert tail[2]["tailLines"] == "500" and "sinceSeconds" not in tail[2]


STEPS = "".join(f"step {i} loss {5 - i / 2}\n" for i in range(1, 7))


def test_a_stream_cut_mid_run_resumes_after_the_last_line_shown(kube):
    """Long runs outlive their log streams (proxy and API server timeouts): a stream cut while the
    pod still runs is followed again from the last line shown (by its timestamp), so the log
    goes on without a gap and without repeating a line."""
    fake, api = kube
    cfg, name, m = make()
    pod = f"{name}-node-0-0-aaaaa"
    fake.scripts[name] = [None, CREATED, CREATED, CREATED, CREATED, COMPLETE]
    fake.pods.append(dict(trainjob_pod(pod, name, log=STEPS), cut_follows=[3]))
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    shown = [line for line in lines if line.startswith(f"[{pod}] ")]
    assert shown == [f"[{pod}] {step}" for step in STEPS.splitlines()], lines
    assert any(f"following the log of {pod} again" in line for line in lines), lines
    first, again, *_ = log_requests(fake, follow=True)
    assert first[2]["timestamps"] in ("true", "True") and "sinceSeconds" not in first[2]
    assert int(again[2]["sinceSeconds"]) > 60  # back to the last line shown, plus the margin


def test_a_stream_cut_just_before_the_pod_ended_gets_the_rest_at_the_end(kube):
    fake, api = kube
    cfg, name, m = make()
    pod = f"{name}-node-0-0-aaaaa"
    fake.scripts[name] = [None, CREATED, COMPLETE]
    fake.pods.append(dict(trainjob_pod(pod, name, phase="Succeeded", log=STEPS), cut_follows=[4]))
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    shown = [line for line in lines if line.startswith(f"[{pod}] ")]
    assert shown == [f"[{pod}] {step}" for step in STEPS.splitlines()], lines
    assert f"[launcher] the rest of the log of pod {pod}:" in lines
    (rest,) = log_requests(fake, follow=False)
    assert "sinceSeconds" in rest[2] and "tailLines" not in rest[2]


def test_a_stream_that_ends_cleanly_just_before_its_pod_gets_the_rest_at_the_end(kube):
    """A proxy can also end a stream cleanly; when the pod ends before the next poll, the final
    read after the job ends still shows the lines after the last one shown."""
    fake, api = kube
    cfg, name, m = make()
    pod = f"{name}-node-0-0-aaaaa"
    fake.scripts[name] = [None, CREATED, COMPLETE]
    fake.pods.append(dict(trainjob_pod(pod, name, phase="Succeeded", log=STEPS),
                          cut_follows=[("clean", 2)]))
    lines = []
    KubeJobs(cfg, api, NS, lines.append).run(m)
    shown = [line for line in lines if line.startswith(f"[{pod}] ")]
    assert shown == [f"[{pod}] {step}" for step in STEPS.splitlines()], lines
    assert not any("ended:" in line for line in lines)  # no error to report
    assert lines.index(f"[launcher] the rest of the log of pod {pod}:") == lines.index(shown[2]) - 1


def test_lines_stamped_alike_are_told_apart_by_how_many_were_shown():
    """Two lines can carry the same timestamp; a resumed stream skips only as many of them as
    were shown. Timestamps are RFC3339Nano, whose fraction drops trailing zeros, so they are
    compared as numbers, not as text ('.5Z' is after '.25Z')."""
    from longalign.training.launcher.logs import LogFollower, stamp_key

    assert stamp_key("2026-12-01T12:00:02.5Z x")[0] > stamp_key("2026-12-01T12:00:02.25Z y")[0]
    from datetime import datetime, timezone

    noon = int(datetime(2026, 12, 1, 12, 0, 2, tzinfo=timezone.utc).timestamp())
    assert stamp_key("2026-12-01T12:00:02Z x") == ((noon, 0), "x")
    assert stamp_key("2026-12-01T13:00:02.000000001+01:00 x") == ((noon, 1), "x")
    assert stamp_key("no stamp") == (None, "no stamp")
    out = []
    follower = LogFollower(None, NS, "", "node", out.append)
    a, b, c = "2026-12-01T12:00:02.5Z a", "2026-12-01T12:00:02.5Z b", "2026-12-01T12:00:03Z c"
    follower._show("p", ["2026-12-01T12:00:02.25Z early", a])  # the stream is cut after "a"
    follower._show("p", ["2026-12-01T12:00:02.25Z early", a, b, c])  # resumed from before it
    assert out == ["[p] early", "[p] a", "[p] b", "[p] c"]


@pytest.mark.parametrize("key", ["lastTimestamp", "eventTime", "firstTimestamp", "creationTimestamp"])
def test_the_latest_warning_is_the_one_reported_whichever_time_field_it_has(key):
    """Events carry their time in one of several fields (lastTimestamp first, then eventTime,
    firstTimestamp, and the object's creation time); the newest event is the one reported."""
    def event(message, **times):
        meta = {"creationTimestamp": times.pop("creationTimestamp")} if "creationTimestamp" in times else {}
        return {"reason": "FailedScheduling", "message": message, "involvedObject": {"name": "pod-0"},
                "metadata": meta, **times}

    older = [event("renewed", lastTimestamp="2026-01-01T00:00:05Z", firstTimestamp="2026-01-01T00:00:00Z"),
             event("early", eventTime="2026-01-01T00:00:01Z"), event("made", creationTimestamp="2026-01-01T00:00:02Z"),
             event("first", firstTimestamp="2026-01-01T00:00:03Z")]
    newest = event("newest", **{key: "2026-01-01T00:00:09Z"})
    undated = event("undated")  # no time at all: older than any dated event
    seen = observe("TrainJob", "job", None, [], [newest, undated] + older)
    assert seen.waiting == "pod-0: FailedScheduling: newest"
    assert observe("TrainJob", "job", None, [], older[::-1] + [undated]).waiting == "pod-0: FailedScheduling: renewed"


def _pod(name, phase, waiting=None, init=False):
    """A Pod as the kubernetes client returns it (model objects, snake_case attributes)."""
    from kubernetes import client

    statuses = None
    if waiting:
        statuses = [client.V1ContainerStatus(name="node", image="img", image_id="", ready=False, restart_count=0,
                                             state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(
                                                 reason=waiting[0], message=waiting[1])))]
    status = client.V1PodStatus(phase=phase, container_statuses=None if init else statuses,
                                init_container_statuses=statuses if init else None)
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), status=status)


@pytest.mark.parametrize("phases,line,started", [
    ([], "created (no pods yet)", False),
    (["Pending", "Pending"], "pods pending (0/2 pods running)", False),
    (["Running", "Pending", "Succeeded"], "running (1/3 pods running, 1 finished)", True),
    (["Succeeded", "Succeeded"], "succeeded (0/2 pods running, 2 finished)", True),
    (["Succeeded", "Failed"], "failed (0/2 pods running, 2 finished)", True),
    (["Failed", "Pending"], "pods pending (0/2 pods running, 1 finished)", True),
    ([None], "pods pending (0/1 pods running)", False),  # a pod without a phase yet
])
def test_the_phase_of_a_job_from_its_pods(phases, line, started):
    pods = [_pod(f"job-node-0-{i}", phase) for i, phase in enumerate(phases)]
    seen = observe("trainjob", "job", None, pods, [])
    assert (seen.line(), seen.started, seen.fatal, seen.waiting) == (line, started, "", "")


def test_what_stops_a_job_from_starting_and_what_only_delays_it():
    pull = ("ImagePullBackOff", 'Back-off pulling image "img:1"')
    stuck = _pod("job-node-0-0", "Pending", waiting=pull, init=True)
    waiting = _pod("job-node-0-1", "Pending", waiting=("ContainerCreating", ""))  # resolves by waiting
    refused = {"reason": "TrainJobResourcesCreationFailed", "message": "denied", "involvedObject": {"name": "job"},
               "lastTimestamp": "2026-01-01T00:00:01Z"}
    delays = [{"reason": reason, "message": f"{reason} text", "involvedObject": {"name": "job-node-0-1"},
               "lastTimestamp": f"2026-01-01T00:00:0{i + 2}Z"}
              for i, reason in enumerate(["FailedScheduling", "FailedCreate", "FailedMount", "FailedAttachVolume",
                                          "BackOff", "Failed"])]
    other = {"reason": "Pulled", "message": "pulled", "involvedObject": {"name": "job-node-0-1"},
             "lastTimestamp": "2026-01-01T00:00:09Z"}  # a Normal-kind reason never counts
    seen = observe("trainjob", "job", {"kind": "JobSet"}, [stuck, waiting], [refused, *delays, other])
    assert seen.fatal == 'pod job-node-0-0: ImagePullBackOff: Back-off pulling image "img:1"'  # the pod's own
    assert seen.waiting == "job-node-0-1: Failed: Failed text"  # the newest delaying event
    assert observe("trainjob", "job", None, [waiting], [refused]).fatal == "job: TrainJobResourcesCreationFailed: denied"
    for event in delays:
        expected = f"job-node-0-1: {event['reason']}: {event['message']}"
        assert observe("trainjob", "job", None, [waiting], [event]).waiting == expected
    assert observe("trainjob", "job", None, [waiting], [other]).waiting == ""
    bare = {"reason": "FailedScheduling", "involvedObject": {"name": "job-node-0-1"}}  # no message, no time
    assert observe("trainjob", "job", None, [waiting], [bare]).waiting == "job-node-0-1: FailedScheduling:"
    no_message = _pod("job-node-0-2", "Pending", waiting=("ErrImagePull", None))
    assert observe("trainjob", "job", None, [no_message], []).fatal == "pod job-node-0-2: ErrImagePull"
