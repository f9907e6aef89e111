"""A fake Kubernetes API server for the launcher tests: a real HTTP server on 127.0.0.1 serving
the REST endpoints the ``kubernetes`` client calls, with the client pointed at it through
``Configuration(host=...)``.

Paths and bodies follow the Kubernetes API: ``/apis/{group}/{version}/namespaces/{ns}/{plural}``
for custom objects (TrainJob, PyTorchJob, JobSet), ``/api/v1/namespaces/{ns}/pods``
(``labelSelector``), ``.../pods/{name}`` and ``.../pods/{name}/log`` (``container``, ``follow``,
``timestamps``, ``sinceSeconds``, ``tailLines``),
``/api/v1/namespaces/{ns}/events`` (``fieldSelector=type=Warning``); conflicts are 409 and unknown
objects 404 with a ``Status`` body. Pods carry the labels the operators set, so a wrong selector
finds no pod. Every request is recorded, so tests can compare the calls with the Role in k8s/.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from longalign.config import TrainingConfig
from longalign.training.launcher import build_manifest, job_name, parse_launcher_config

JOB_PLURALS = ("trainjobs", "pytorchjobs")
NS = "team-a"
COMPLETE = {"conditions": [{"type": "Created", "status": "True", "reason": "JobSetCreated"},
                           {"type": "Complete", "status": "True", "reason": "JobSetCompleted",
                            "message": "jobset completed"}]}
FAILED = {"conditions": [{"type": "Created", "status": "True", "reason": "JobSetCreated"},
                         {"type": "Failed", "status": "True", "reason": "JobSetFailed",
                          "message": "jobset failed: node-0 exited with code 1"}]}
RUNNING_PT = {"conditions": [{"type": "Running", "status": "True", "reason": "PyTorchJobRunning"}]}
SUCCEEDED_PT = {"conditions": [{"type": "Running", "status": "False"},
                               {"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded"}]}


class FakeKube:
    """The API server's state: objects, a status script per object, pods and their logs."""

    def __init__(self):
        self.objects = {}  # path -> object
        self.scripts = {}  # name -> list of statuses, one per GET (the last one stays)
        self.pods = []  # dicts: name, labels, phase, container, log, after (GETs of the job),
        # waiting / init_waiting: (reason, message) of a waiting container / init container
        self.requests = []
        self.gets = {}
        self.create_status = None  # force an HTTP error on create
        self.on_status = {}  # (name, status JSON) -> callback run when the job first shows it
        self.default_script = None  # for jobs whose name the test cannot know in advance
        self.when_complete = None  # callback(name) the first time a job shows Complete
        self.completed = set()
        self.fail_gets = {}  # name -> HTTP codes answered to the next GETs of the job
        self.events = []  # core/v1 Event dicts (type, reason, message, involvedObject)
        self.own_pods = {}  # name -> Pod dict served at /api/v1/namespaces/{ns}/pods/{name}
        self.failed_follows = 0  # answer this many following log requests with HTTP 500
        self.lock = threading.Lock()

    def serve(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code, reason, message):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": message, "code": code})

            def _handle(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with fake.lock:
                    fake.requests.append((method, url.path, query, body))
                    fake.route(self, method, url.path, query, body)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

            def do_PATCH(self):
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a cancelled client hung up
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, h, method, path, query, body):
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and parts[2] == "namespaces" and parts[4] == "events":
            items = [e for e in self.events
                     if query.get("fieldSelector") != "type=Warning" or e["type"] == "Warning"]
            return h._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {},
                                 "items": [dict(e, metadata={"name": f"ev-{i}", "namespace": parts[3]})
                                           for i, e in enumerate(items)]})
        if parts[:2] == ["api", "v1"] and parts[2] == "namespaces" and parts[4] == "pods":
            return self.route_pods(h, parts, query)
        # /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
        if parts[0] != "apis" or parts[3] != "namespaces" or len(parts) not in (6, 7):
            return h._status(404, "NotFound", f"no route {path}")
        collection = "/".join(parts[:6])
        if method == "POST" and len(parts) == 6:
            if self.create_status:
                return h._status(self.create_status, "Forbidden", "trainjobs is forbidden")
            name = body["metadata"]["name"]
            key = f"{collection}/{name}"
            if key in self.objects:
                return h._status(409, "AlreadyExists", f"{name} already exists")
            obj = dict(body, metadata=dict(body["metadata"], uid=f"uid-{name}",
                                           creationTimestamp="2026-12-01T12:00:00Z"))
            self.objects[key] = obj
            self.gets[name] = 0
            return h._send(201, obj)
        key = "/".join(parts)
        if key not in self.objects:
            return h._status(404, "NotFound", f"{parts[-1]} not found")
        name = parts[-1]
        if method == "GET" and self.fail_gets.get(name):
            return h._status(self.fail_gets[name].pop(0), "InternalError", "etcd leader changed")
        if method == "DELETE":
            del self.objects[key]
            return h._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if method == "PATCH":
            if h.headers.get("Content-Type") != "application/merge-patch+json":
                return h._status(415, "UnsupportedMediaType", h.headers.get("Content-Type"))
            obj = self.objects[key]
            obj["metadata"] = {**obj["metadata"], **body.get("metadata", {})}
            return h._send(200, obj)
        if parts[5] not in JOB_PLURALS:
            return h._send(200, self.objects[key])
        self.gets[name] = self.gets.get(name, 0) + 1
        script = self.scripts.get(name, self.default_script)
        obj = dict(self.objects[key])
        if script:
            status = script[min(self.gets[name] - 1, len(script) - 1)]
            if status is not None:
                obj["status"] = status
                done = self.on_status.pop((name, json.dumps(status, sort_keys=True)), None)
                if done:
                    done()
                if status is COMPLETE and name not in self.completed and self.when_complete:
                    self.completed.add(name)
                    self.when_complete(name)
        return h._send(200, obj)

    def visible_pods(self):
        started = {n for n, c in self.gets.items() if c}
        return [p for p in self.pods if p["job"] in started and self.gets[p["job"]] >= p.get("after", 1)]

    @staticmethod
    def pod_object(p, namespace):
        status = {"phase": p["phase"]}
        for key, field in (("waiting", "containerStatuses"), ("init_waiting", "initContainerStatuses")):
            if p.get(key):  # a container (or init container) waiting for a reason
                reason, message = p[key]
                status[field] = [{
                    "name": p["container"] if key == "waiting" else "init", "ready": False, "restartCount": 0,
                    "image": "img", "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}]
        return {"metadata": {"name": p["name"], "namespace": namespace, "labels": p["labels"],
                             "creationTimestamp": "2026-12-01T12:00:01Z"}, "status": status}

    def route_pods(self, h, parts, query):
        if len(parts) == 5:
            want = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if kv)
            items = [self.pod_object(p, parts[3]) for p in self.visible_pods()
                     if all(p["labels"].get(k) == v for k, v in want.items())]
            return h._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        if len(parts) == 6:
            if parts[5] not in self.own_pods:
                return h._status(404, "NotFound", f"pods {parts[5]} not found")
            return h._send(200, self.own_pods[parts[5]])
        if len(parts) == 7 and parts[6] == "log":
            pod = next((p for p in self.pods if p["name"] == parts[5]), None)
            if pod is None:
                return h._status(404, "NotFound", "pod not found")
            if query.get("container") != pod["container"]:
                return h._status(400, "BadRequest", f"container {query.get('container')} is not valid")
            follow = query.get("follow") in ("true", "True")
            if follow and self.failed_follows:
                self.failed_follows -= 1
                return h._status(500, "InternalError", "the kubelet closed the stream")
            lines = log_lines(pod, query)
            body = "".join(line + "\n" for line in lines).encode()
            if follow and pod.get("cut_follows"):
                # a followed log comes chunked (HTTP/1.1); this connection drops after k lines,
                # before the last chunk, or with ("clean", k) ends there as if the log ended
                k = pod["cut_follows"].pop(0)
                clean = isinstance(k, tuple)
                k = k[1] if clean else k
                h.protocol_version = "HTTP/1.1"
                h.send_response(200)
                h.send_header("Content-Type", "text/plain")
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                for line in lines[:k]:
                    data = (line + "\n").encode()
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    h.wfile.flush()
                if clean:
                    h.wfile.write(b"0\r\n\r\n")
                h.close_connection = True
                return None
            return h._send(200, body, "text/plain")
        return h._status(404, "NotFound", "no route")


def stamp(i):
    """The kubelet's timestamp of a pod's line ``i``: RFC3339Nano in UTC, whose fraction drops
    trailing zeros (whole seconds have none), 0.25 s apart from 2026-12-01T12:00:02Z."""
    seconds, quarter = divmod(i, 4)
    fraction = f".{quarter * 25:02d}".rstrip("0") if quarter else ""
    return f"2026-12-01T12:{seconds // 60:02d}:{2 + seconds % 60:02d}{fraction}Z"


def log_lines(pod, query):
    """The lines a log request gets, as the API server answers it: each line prefixed with its
    timestamp when ``timestamps=true``; ``sinceSeconds`` keeps the lines stamped at or after that
    many seconds before now; ``tailLines`` the last ones. ``pod["stamps"]`` overrides the
    timestamps (one per line)."""
    from datetime import datetime, timezone

    lines = pod["log"].splitlines()
    stamps = pod.get("stamps") or [stamp(i) for i in range(len(lines))]
    pairs = list(zip(stamps, lines))
    if "sinceSeconds" in query:
        start = datetime.now(timezone.utc).timestamp() - int(query["sinceSeconds"])
        pairs = [(t, line) for t, line in pairs
                 if datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() >= start]
    if "tailLines" in query:
        pairs = pairs[-int(query["tailLines"]):]
    if query.get("timestamps") in ("true", "True"):
        return [f"{t} {line}" for t, line in pairs]
    return [line for _, line in pairs]


def make(kind="trainjob", **extra):
    # 30 s: a correct launcher ends these scripted jobs in about a second; a broken one fails its
    # test at this deadline instead of hanging (mutation testing runs many such). Not shorter: a
    # loaded machine (and mutmut's tracing) can make a one-second job take ten.
    cfg = parse_launcher_config({"kind": kind, "namespace": NS, "poll_seconds": 0.05,
                                 "timeout_seconds": 30, **extra})
    name = job_name("run-7", cfg.name_prefix)
    m = build_manifest(cfg, name=name, namespace=NS, run_id="run-7", image="img:1",
                       training=TrainingConfig().model_dump(mode="json"), base_model="embedded:tiny")
    return cfg, name, m


def trainjob_pod(name, job, index=0, phase="Running", log="", rjob="node"):
    return {"job": job, "name": name, "phase": phase, "container": "node", "log": log,
            "labels": {"jobset.sigs.k8s.io/jobset-name": job, "jobset.sigs.k8s.io/replicatedjob-name": rjob,
                       "batch.kubernetes.io/job-completion-index": str(index)}}
