"""`longalign submit` / `schedule` against a KFP API server stub on 127.0.0.1.

The stub is a real HTTP server implementing just the v2beta1 REST endpoints kfp.Client 2.17.0 calls
(paths and bodies as in kfp_server_api); it records every request so the tests assert what a real
KFP server would receive, including the bearer token and the pipeline spec with its platform spec.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kfp
import pytest

from longalign.cli import main

API = "/apis/v2beta1"


class KFPStub:
    """In-memory KFP API: experiments, pipelines and versions, runs and recurring runs."""

    def __init__(self):
        self.requests: list[dict] = []
        self.errors: list[str] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.recurring: dict[str, dict] = {}
        self.ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    @staticmethod
    def _matches(items, query):
        flt = query.get("filter")
        if not flt:
            return list(items)
        (pred,) = json.loads(flt[0])["predicates"]
        # kfp.Client sends the Filter proto's enum as its number (EQUALS = 1)
        assert pred["operation"] in ("EQUALS", 1) and pred["key"] == "display_name", pred
        return [i for i in items if i["display_name"] == pred["stringValue"]]

    def handle(self, method, path, query, body):  # noqa: C901 (one branch per endpoint)
        if method == "GET" and path == f"{API}/healthz":
            return {"multi_user": False}
        if method == "GET" and path == f"{API}/experiments":
            found = self._matches(self.experiments.values(), query)
            return {"experiments": found, "total_size": len(found)} if found else {}
        if method == "POST" and path == f"{API}/experiments":
            exp = {**json.loads(body), "experiment_id": self.new_id("exp")}
            self.experiments[exp["experiment_id"]] = exp
            return exp
        if method == "POST" and path == f"{API}/runs":
            return {**json.loads(body), "run_id": self.new_id("run"), "state": "PENDING"}
        if method == "GET" and path == f"{API}/pipelines":
            found = self._matches(self.pipelines.values(), query)
            return {"pipelines": found, "total_size": len(found)} if found else {}
        if method == "POST" and path == f"{API}/pipelines/upload":
            pipeline = {"pipeline_id": self.new_id("pipeline"), "display_name": query["name"][0]}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self.versions[pipeline["pipeline_id"]] = [{
                "pipeline_id": pipeline["pipeline_id"], "pipeline_version_id": self.new_id("version"),
                "display_name": query["name"][0]}]
            return pipeline
        if method == "POST" and path == f"{API}/pipelines/upload_version":
            pipeline_id = query["pipelineid"][0]
            version = {"pipeline_id": pipeline_id, "pipeline_version_id": self.new_id("version"),
                       "display_name": query["name"][0]}
            self.versions[pipeline_id].insert(0, version)
            return version
        if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            versions = self.versions[path.split("/")[-2]]
            return {"pipeline_versions": versions, "total_size": len(versions)}
        if method == "GET" and path == f"{API}/recurringruns":
            found = [r for r in self._matches(self.recurring.values(), query)
                     if r["experiment_id"] == query["experiment_id"][0]]
            # the v2beta1 proto names this one field in camelCase (kfp_server_api's attribute_map too)
            return {"recurringRuns": found, "total_size": len(found)} if found else {}
        if method == "DELETE" and path.startswith(f"{API}/recurringruns/"):
            del self.recurring[path.rsplit("/", 1)[1]]
            return {}
        if method == "POST" and path == f"{API}/recurringruns":
            job = {**json.loads(body), "recurring_run_id": self.new_id("recurring")}
            self.recurring[job["recurring_run_id"]] = job
            return job
        return None


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    stub = KFPStub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = parse_qs(url.query)
            stub.requests.append({"method": self.command, "path": url.path, "query": query,
                                  "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            try:
                result = stub.handle(self.command, url.path, query, body)
                status = 200 if result is not None else 404
            except Exception as exc:  # reported by the fixture: the client sent something unexpected
                stub.errors.append(repr(exc))
                result, status = {"error": repr(exc)}, 500
            payload = json.dumps(result if result is not None else {"error": "not found"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # no kfp context file of this machine's user, no proxies, no ambient token
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "LONGALIGN_KFP_TOKEN",
                 "LONGALIGN_KFP_TOKEN_FILE", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    stub.host = f"http://127.0.0.1:{server.server_address[1]}"
    yield stub
    server.shutdown()
    assert stub.errors == [], stub.errors
    server.server_close()


def cli(argv):
    """The CLI in this process, as users run it; returns the exit code."""
    try:
        return main(argv)
    except SystemExit as exc:  # typer exits on success, main() returns on a UserError
        return exc.code


def calls(stub):
    return [(r["method"], r["path"]) for r in stub.requests]


def body(request):
    return json.loads(request["body"])


def only(stub, method, path):
    (request,) = [r for r in stub.requests if (r["method"], r["path"]) == (method, path)]
    return request


def test_submit_creates_experiment_and_run_with_spec_params_and_token(kfp_server, monkeypatch, capsys):
    monkeypatch.setenv("LONGALIGN_KFP_TOKEN", "s3cret-token")
    code = cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--experiment", "weekly",
                 "--run-name", "r1", "--param", "gpu_count=4", "--param", 'gpu_node_selector={"pool": "h100"}',
                 "--set", "training.epochs=3", "--service-account", "longalign-pipeline-runner"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "submitted run run-2" in out.out
    assert "s3cret-token" not in out.out + out.err
    assert calls(kfp_server) == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    assert all(r["headers"]["authorization"] == "Bearer s3cret-token" for r in kfp_server.requests)
    assert body(only(kfp_server, "POST", f"{API}/experiments"))["display_name"] == "weekly"
    run = body(only(kfp_server, "POST", f"{API}/runs"))
    assert run["display_name"] == "r1" and run["experiment_id"] == "exp-1"
    assert run["service_account"] == "longalign-pipeline-runner"
    params = run["runtime_config"]["parameters"]
    assert params["gpu_count"] == 4 and params["gpu_node_selector"] == {"pool": "h100"}
    assert params["training_config"]["epochs"] == 3
    assert params["base_model"] == "embedded:tiny"
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "longalign"
    # the platform spec (volume, secrets, GPUs) travels with the run
    executors = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in ("fingerprint", "sourcing", "generation", "packing",
                                                    "training", "scoring", "promotion")}
    # without --no-cache each task keeps its compiled caching setting: the stages cached, the data
    # fingerprint in front and the promotion gate at the end never
    tasks = spec["pipeline_spec"]["root"]["dag"]["tasks"]
    assert {n for n, t in tasks.items() if t.get("cachingOptions") != {"enableCache": True}} == {
        "fingerprint", "promotion"}
    assert params["promotion_config"]["model_name"] == "longalign"


@pytest.mark.parametrize("extra, image", [
    ([], "cuda"),  # GPUs for generation and scoring bring the CUDA image with them
    (["--param", "inference_image=registry.example/custom:1"], "registry.example/custom:1"),
])
def test_submit_with_inference_gpus_runs_them_in_an_image_that_can_use_them(kfp_server, capsys,
                                                                          extra, image):
    from longalign.components.common import IMAGE_CUDA

    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--param",
                "inference_gpu_count=1", *extra]) == 0, capsys.readouterr().err
    params = body(only(kfp_server, "POST", f"{API}/runs"))["runtime_config"]["parameters"]
    assert params["inference_gpu_count"] == 1
    assert params["inference_image"] == (IMAGE_CUDA if image == "cuda" else image)
    assert IMAGE_CUDA.split(":")[0].endswith("/longalign-cuda")


def test_submit_without_inference_gpus_keeps_the_compiled_image(kfp_server):
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny"]) == 0
    params = body(only(kfp_server, "POST", f"{API}/runs"))["runtime_config"]["parameters"]
    assert "inference_image" not in params  # the compiled default: the data image


def test_submit_no_cache_turns_caching_off_for_every_task(kfp_server, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    monkeypatch.setenv("LONGALIGN_KFP_TOKEN_FILE", str(token_file))
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--no-cache"]) == 0
    run = body(only(kfp_server, "POST", f"{API}/runs"))
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(t["cachingOptions"].get("enableCache", False) is False for t in tasks.values())
    assert "service_account" not in run or run["service_account"] is None
    assert all(r["headers"]["authorization"] == "Bearer file-token" for r in kfp_server.requests)
    assert "file-token" not in capsys.readouterr().out


def test_submit_without_token_sends_no_authorization(kfp_server, capsys):
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny"]) == 0
    assert all("authorization" not in r["headers"] for r in kfp_server.requests)


@pytest.mark.parametrize("param, fragment", [
    ("gpu_cont=2", "not a pipeline parameter"),
    ("gpu_count=two", "expected number_integer"),
    ("inference_gpu_count=-1", "expected 0 or more GPUs"),
    ("gpu_tolerations={}", "expected list"),
    ("novalue", "NAME=VALUE"),
    ("training_config={\"epochs\": 0}", "training.epochs"),
])
def test_bad_param_is_one_line_error_and_creates_nothing(kfp_server, capsys, param, fragment):
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--param", param]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and fragment in err and len(err.strip().splitlines()) == 1
    assert not [r for r in kfp_server.requests if r["method"] == "POST"]


def test_schedule_first_time_uploads_pipeline_and_creates_recurring_run(kfp_server, capsys):
    code = cli(["schedule", "--host", kfp_server.host, "--preset", "tiny", "--cron", "0 0 3 * * 0",
                 "--max-concurrency", "2", "--param", "pvc_name=team-data"])
    assert code == 0, capsys.readouterr().err
    assert calls(kfp_server) == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/pipeline-1/versions"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("GET", f"{API}/recurringruns"),
        ("POST", f"{API}/recurringruns"),
    ]
    upload = only(kfp_server, "POST", f"{API}/pipelines/upload")
    assert upload["query"]["name"] == ["longalign"]
    assert b'name="uploadfile"' in upload["body"] and b"pipelineInfo:" in upload["body"]
    assert b"platforms:" in upload["body"]  # the uploaded YAML carries the platform spec
    # each retrain fingerprints the data first and ends with the promotion gate
    assert b"exec-fingerprint:" in upload["body"] and b"exec-promotion:" in upload["body"]
    listing = only(kfp_server, "GET", f"{API}/recurringruns")
    assert listing["query"]["experiment_id"] == ["exp-3"]
    job = body(only(kfp_server, "POST", f"{API}/recurringruns"))
    assert job["display_name"] == "longalign-retrain" and job["experiment_id"] == "exp-3"
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 0"}}
    assert int(job["max_concurrency"]) == 2 and job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["pipeline_version_reference"] == {"pipeline_id": "pipeline-1", "pipeline_version_id": "version-2"}
    assert "pipeline_spec" not in job or job["pipeline_spec"] is None  # runs the uploaded version
    assert job["runtime_config"]["parameters"]["pvc_name"] == "team-data"
    assert "scheduled recurring run recurring-4" in capsys.readouterr().out


def test_multinode_pipeline_is_submitted_and_scheduled_under_its_own_name(kfp_server, capsys):
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--pipeline", "longalign-multinode",
                "--param", 'launcher_config={"kind": "pytorchjob", "num_nodes": 4}']) == 0
    run = body(only(kfp_server, "POST", f"{API}/runs"))
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "longalign-multinode"
    assert run["runtime_config"]["parameters"]["launcher_config"] == {"kind": "pytorchjob", "num_nodes": 4}
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks["training-launcher"]["cachingOptions"] == {}
    assert cli(["schedule", "--host", kfp_server.host, "--preset", "tiny", "--cron", "0 0 3 * * 0",
                "--pipeline", "longalign-multinode"]) == 0
    assert only(kfp_server, "POST", f"{API}/pipelines/upload")["query"]["name"] == ["longalign-multinode"]


def test_submit_removes_its_compiled_package(kfp_server, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny"]) == 0
    assert b"pipelineInfo" in json.dumps(body(only(kfp_server, "POST", f"{API}/runs"))).encode()
    assert list(tmp_path.iterdir()) == []


def test_unknown_pipeline_is_one_line_error_before_any_request(kfp_server, capsys):
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny", "--pipeline", "longalign-huge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "longalign-multinode" in err and len(err.strip().splitlines()) == 1
    assert kfp_server.requests == []


def test_schedule_again_uploads_a_version_and_replaces_the_recurring_run(kfp_server, capsys):
    argv = ["schedule", "--host", kfp_server.host, "--preset", "tiny", "--cron", "0 0 3 * * 0"]
    assert cli(argv) == 0
    first_job = next(iter(kfp_server.recurring))
    # another team's recurring run in the same experiment must survive
    kfp_server.recurring["other"] = {"recurring_run_id": "other", "display_name": "nightly-eval",
                                     "experiment_id": "exp-3"}
    kfp_server.requests.clear()
    assert cli(argv[:-1] + ["0 30 4 * * 6"]) == 0
    assert calls(kfp_server) == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"),
        ("GET", f"{API}/recurringruns"),
        ("DELETE", f"{API}/recurringruns/{first_job}"),
        ("POST", f"{API}/recurringruns"),
    ]
    upload = only(kfp_server, "POST", f"{API}/pipelines/upload_version")
    assert upload["query"]["pipelineid"] == ["pipeline-1"]
    assert upload["query"]["name"][0].startswith("0.1.0-")
    assert b"pipelineInfo:" in upload["body"]
    assert json.loads(only(kfp_server, "GET", f"{API}/pipelines")["query"]["filter"][0])["predicates"][0][
        "stringValue"] == "longalign"
    job = body(only(kfp_server, "POST", f"{API}/recurringruns"))
    new_version = kfp_server.versions["pipeline-1"][0]["pipeline_version_id"]
    assert job["pipeline_version_reference"]["pipeline_version_id"] == new_version
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * 6"
    assert sorted(j["display_name"] for j in kfp_server.recurring.values()) == ["longalign-retrain", "nightly-eval"]


def test_schedule_rejects_five_field_cron_before_any_request(kfp_server, capsys):
    assert cli(["schedule", "--host", kfp_server.host, "--cron", "0 3 * * 0"]) == 2
    assert "6 fields" in capsys.readouterr().err
    assert kfp_server.requests == []


def test_unreadable_token_file_is_one_line_error(kfp_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGALIGN_KFP_TOKEN_FILE", str(tmp_path / "missing"))
    assert cli(["submit", "--host", kfp_server.host, "--preset", "tiny"]) == 2
    assert "LONGALIGN_KFP_TOKEN_FILE" in capsys.readouterr().err
    assert kfp_server.requests == []


def test_token_is_never_a_command_line_option():
    from typer.main import get_command

    from longalign.cli import app

    command = get_command(app)
    for name in ("submit", "schedule"):
        options = {opt for p in command.commands[name].params for opt in p.opts}
        assert not any("token" in opt for opt in options), options
