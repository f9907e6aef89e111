"""promote() with registry=kubeflow: the model-registry client (0.3.8) against a server on
127.0.0.1 that validates every request and response against the upstream v0.3.8 OpenAPI spec."""

from __future__ import annotations

import pytest
from model_registry_server import ValidatingRegistry

from longalign.config import PromotionConfig
from longalign.errors import UserError
from longalign.promotion import open_registry, promote

TOKEN = "registry-token-for-tests"


@pytest.fixture(scope="module")
def server():
    registry = ValidatingRegistry()
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture
def config(server, monkeypatch, request):
    """A model name of its own per test (the server is shared by the module)."""
    monkeypatch.setenv("LONGALIGN_REGISTRY_TOKEN", TOKEN)
    return PromotionConfig(registry="kubeflow", url=server.url, model_name=request.node.name[5:40])


def of_model(server, config) -> tuple[dict, list[dict], list[dict]]:
    """(registered model, its versions, their artifacts) as the server stored them."""
    (rm,) = [m for m in server.store.models.values() if m["name"] == config.model_name]
    versions = [v for v in server.store.versions.values() if v["registeredModelId"] == rm["id"]]
    artifacts = [server.store.artifacts[a] for v in versions for a in server.store.links.get(v["id"], [])]
    return rm, versions, artifacts


def props(version: dict) -> dict:
    return {k: v.get("double_value", v.get("string_value")) for k, v in version["customProperties"].items()}


def test_registration_sends_model_version_artifact_metrics_and_lineage(server, config, outputs, tmp_path):
    model, scores, corpus = outputs("one", {"needle": 0.5, "recall": 0.25}, fingerprint="b" * 64)
    decision = promote(config, model, scores, tmp_path / "d1", corpus_dir=corpus, uri="minio://bucket/model",
                       run_id="run-123", base_model="embedded:tiny")
    assert decision["status"] == "promoted" and decision["version"] == "v1"
    assert server.errors == []
    rm, (mv,), (artifact,) = of_model(server, config)
    assert rm["owner"] == "longalign" and mv["name"] == "v1" and mv["author"] == "longalign"
    assert props(mv) == {"score:needle": 0.5, "score:recall": 0.25, "data_fingerprint": "b" * 64,
                         "pipeline_run_id": "run-123", "base_model": "embedded:tiny",
                         "longalign_version": props(mv)["longalign_version"],
                         "scoring_config_sha256": props(mv)["scoring_config_sha256"]}
    assert mv["customProperties"]["score:needle"]["metadataType"] == "MetadataDoubleValue"
    assert (artifact["artifactType"], artifact["uri"]) == ("model-artifact", "minio://bucket/model")
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("safetensors", "1")
    assert {r["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}


def test_gate_blocks_a_regression_and_registers_an_improvement(server, config, outputs, tmp_path):
    for name, needle in (("one", 0.5), ("two", 0.25), ("three", 0.75)):
        model, scores, corpus = outputs(name, {"needle": needle})
        decision = promote(config, model, scores, tmp_path / f"d-{name}", corpus_dir=corpus)
        expected = {"one": ("promoted", "v1"), "two": ("blocked", None), "three": ("promoted", "v2")}[name]
        assert (decision["status"], decision["version"]) == expected, name
    assert decision["last_promoted"]["version"] == "v1"
    assert sorted(v["name"] for v in of_model(server, config)[1]) == ["v1", "v2"]
    assert server.errors == []


def test_archived_versions_are_skipped_when_finding_the_last_promoted(server, config, outputs, tmp_path):
    for name, needle in (("one", 0.5), ("two", 0.9)):
        model, scores, corpus = outputs(name, {"needle": needle})
        promote(config, model, scores, tmp_path / f"d-{name}", corpus_dir=corpus)
    open_registry(config).set_state(config.model_name, "v2", "ARCHIVED")  # roll back to v1
    model, scores, corpus = outputs("three", {"needle": 0.6})
    decision = promote(config, model, scores, tmp_path / "d-three", corpus_dir=corpus)
    assert decision["last_promoted"]["version"] == "v1" and decision["version"] == "v3"
    assert [r for r in server.requests if r["method"] == "PATCH"][0]["body"]["state"] == "ARCHIVED"
    assert server.errors == []


def test_every_request_was_checked_against_the_spec(server, config):
    """The stand-in really validates: a request outside the spec is recorded as an error."""
    import urllib.request

    before = len(server.errors)
    request = urllib.request.Request(f"{server.url}/api/model_registry/v1alpha3/model_versions",
                                     data=b'{"name": 1}', method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400 and len(server.errors) == before + 1
    del server.errors[before:]


def test_unreachable_registry_is_one_user_error(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = PromotionConfig(registry="kubeflow", url=f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LONGALIGN_REGISTRY_TOKEN", TOKEN)
    with pytest.raises(UserError, match="cannot reach the Model Registry"):
        open_registry(config)
