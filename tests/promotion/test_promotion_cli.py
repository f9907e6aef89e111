"""`longalign models list|archive|restore`: rolling back on the local index and the Model Registry."""

from __future__ import annotations

import pytest
from model_registry_server import ValidatingRegistry

from longalign.cli import main
from longalign.config import PromotionConfig, load_run_config
from longalign.orchestrate import local_promotion
from longalign.promotion import promote


def cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def promote_two(config, outputs, tmp_path):
    for name, needle in (("one", 0.5), ("two", 0.75)):
        model, scores, corpus = outputs(name, {"needle": needle})
        promote(config, model, scores, tmp_path / f"d-{name}", corpus_dir=corpus, run_id=f"run-{name}")


def test_local_index_of_a_run_root_lists_archives_and_restores(outputs, tmp_path, capsys):
    root = tmp_path / "runs"
    promote_two(local_promotion(load_run_config("tiny"), root), outputs, tmp_path)
    assert cli(["models", "list", "--root", str(root)]) == 0
    listing = capsys.readouterr().out
    assert "v1" in listing and "v2" in listing and "needle 0.750" in listing and "run-two" in listing
    assert cli(["models", "archive", "v2", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "longalign v2: ARCHIVED; last promoted is now v1"
    assert cli(["models", "restore", "v2", "--root", str(root)]) == 0
    assert "last promoted is now v2" in capsys.readouterr().out
    assert cli(["models", "archive", "v7", "--root", str(root)]) == 2
    assert capsys.readouterr().err.strip() == "error: model 'longalign' has no version 'v7'"
    assert cli(["models", "archive", "--root", str(root)]) == 2
    assert capsys.readouterr().err.strip() == "error: 'archive' takes a VERSION, e.g. v3"


def test_kubeflow_registry_rollback_through_the_cli(outputs, tmp_path, capsys, monkeypatch):
    server = ValidatingRegistry()
    server.start()
    try:
        monkeypatch.setenv("LONGALIGN_REGISTRY_TOKEN", "t0ken")
        config = PromotionConfig(registry="kubeflow", url=server.url, model_name="chat")
        promote_two(config, outputs, tmp_path)
        sets = ["--set", "promotion.registry=kubeflow", "--set", f"promotion.url={server.url}",
                "--set", "promotion.model_name=chat"]
        assert cli(["models", "archive", "v2", *sets]) == 0
        assert capsys.readouterr().out.strip() == "chat v2: ARCHIVED; last promoted is now v1"
        assert cli(["models", "list", *sets]) == 0
        assert "ARCHIVED" in capsys.readouterr().out
        assert server.errors == []
    finally:
        server.stop()


@pytest.mark.parametrize("bad, message", [
    (["--set", "promotion.registry=kubeflow"], "registry=kubeflow needs url"),
    (["--set", "promotion.margins={\"needle\": -1}"], "margins must be >= 0"),
])
def test_bad_promotion_settings_are_one_error_line(bad, message, capsys):
    assert cli(["models", "list", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid config") and message in err and "\n" not in err
