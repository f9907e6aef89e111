"""A Kubeflow Model Registry stand-in on 127.0.0.1 that checks every request against the spec.

A real HTTP server (ThreadingHTTPServer) keeps registered models, model versions and model
artifacts in memory and answers the v1alpha3 REST endpoints the ``model-registry`` client uses.
Every request is validated with openapi-core against the upstream v0.3.8 spec
(tests/data/model-registry/model-registry.yaml: paths, methods, parameters, bodies, and the
bearer-token security requirement), and so is every response it sends. Failures are answered
with HTTP 400 and collected in ``errors``; tests assert there are none.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

SPEC = Path(__file__).resolve().parents[1] / "data" / "model-registry" / "model-registry.yaml"
API = "/api/model_registry/v1alpha3"


class NotFound(Exception):
    pass


class RegistryStore:
    """Registered models, model versions and model artifacts, as the server stores them."""

    def __init__(self):
        self.ids = itertools.count(1)
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}
        self.links: dict[str, list[str]] = {}  # model version id -> artifact ids

    def _new(self, body: dict, **extra) -> dict:
        now = str(int(time.time() * 1000) + next(self.ids))  # strictly increasing create times
        return {**body, **extra, "id": str(next(self.ids)), "createTimeSinceEpoch": now,
                "lastUpdateTimeSinceEpoch": now}

    @staticmethod
    def page(items: list[dict], query: dict) -> dict:
        key = "createTimeSinceEpoch" if query.get("orderBy", "ID") == "CREATE_TIME" else "id"
        items = sorted(items, key=lambda i: int(i[key]), reverse=query.get("sortOrder") == "DESC")
        size = int(query.get("pageSize") or 100)
        return {"items": items[:size], "nextPageToken": "", "pageSize": size, "size": len(items[:size])}

    @staticmethod
    def find(items, query: dict, parent_key: str | None = None) -> dict:
        for item in items:
            if item.get("name") == query.get("name") and (
                    parent_key is None or "parentResourceId" not in query
                    or item.get(parent_key) == query["parentResourceId"]):
                return item
        raise NotFound(query)

    def handle(self, method: str, path: str, query: dict, body: dict | None):  # noqa: C901
        if method == "GET" and path == "/registered_models":
            return self.page(list(self.models.values()), query)
        if method == "POST" and path == "/registered_models":
            rm = self._new(body, state=body.get("state", "LIVE"))
            self.models[rm["id"]] = rm
            return rm, 201
        if method == "GET" and path == "/registered_model":
            return self.find(self.models.values(), query)
        if m := re.fullmatch(r"/registered_models/(\d+)", path):
            if m[1] not in self.models:
                raise NotFound(path)
            return self.models[m[1]]
        if method == "GET" and (m := re.fullmatch(r"/registered_models/(\d+)/versions", path)):
            return self.page([v for v in self.versions.values() if v["registeredModelId"] == m[1]], query)
        if method == "POST" and path == "/model_versions":
            if body["registeredModelId"] not in self.models:
                raise NotFound(body["registeredModelId"])
            mv = self._new(body, state=body.get("state", "LIVE"))
            self.versions[mv["id"]] = mv
            return mv, 201
        if method == "GET" and path == "/model_version":
            return self.find(self.versions.values(), query, "registeredModelId")
        if m := re.fullmatch(r"/model_versions/(\d+)", path):
            if m[1] not in self.versions:
                raise NotFound(path)
            if method == "PATCH":
                self.versions[m[1]].update(body, lastUpdateTimeSinceEpoch=str(int(time.time() * 1000)))
            return self.versions[m[1]]
        if m := re.fullmatch(r"/model_versions/(\d+)/artifacts", path):
            if m[1] not in self.versions:
                raise NotFound(path)
            if method == "POST":
                art = self._new(body)
                self.artifacts[art["id"]] = art
                self.links.setdefault(m[1], []).append(art["id"])
                return art, 200
            return self.page([self.artifacts[a] for a in self.links.get(m[1], [])], query)
        if method == "GET" and path == "/model_artifact":
            parent = query.get("parentResourceId")
            pool = [self.artifacts[a] for a in self.links.get(parent, [])] if parent else self.artifacts.values()
            return self.find(pool, {"name": query.get("name")})
        raise NotFound(f"{method} {path} is not served by this stand-in")


class ValidatingRegistry:
    """The server: start() -> base URL; requests/errors/tokens recorded for the tests."""

    def __init__(self):
        self.store = RegistryStore()
        self.requests: list[dict] = []
        self.errors: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._spec = yaml.safe_load(SPEC.read_text())

    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                owner.serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        url = f"http://127.0.0.1:{self._server.server_address[1]}"
        spec = dict(self._spec, servers=[{"url": url}])  # only the address differs from upstream
        self.openapi = OpenAPI.from_dict(spec)
        self.url = url
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlparse(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        query = dict(parse_qsl(url.query))
        headers = {k: v for k, v in handler.headers.items()}
        request = MockRequest(self.url, handler.command, url.path, args=query, headers=headers, data=raw,
                              content_type=handler.headers.get("Content-Type") or "application/json")
        self.requests.append({"method": handler.command, "path": url.path, "query": query,
                              "body": json.loads(raw) if raw else None,
                              "authorization": handler.headers.get("Authorization")})
        try:
            self.openapi.validate_request(request)
        except Exception as exc:  # every validation error type of openapi-core
            self.errors.append(f"{handler.command} {url.path}: {type(exc).__name__}: {exc} "
                               f"{getattr(exc, '__cause__', '')}")
            return self._send(handler, request, 400, {"code": "400", "message": f"invalid request: {exc}"})
        try:
            result = self.store.handle(handler.command, url.path.removeprefix(API),
                                       query, json.loads(raw) if raw else None)
        except NotFound as exc:
            return self._send(handler, request, 404, {"code": "404", "message": f"not found: {exc}"})
        body, status = result if isinstance(result, tuple) else (result, 200)
        self._send(handler, request, status, body)

    def _send(self, handler, request, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.openapi.validate_response(request, MockResponse(data, status_code=status))
        except Exception as exc:
            self.errors.append(f"response to {request.method.upper()} {request.path} ({status}): "
                               f"{type(exc).__name__}: {exc}")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
