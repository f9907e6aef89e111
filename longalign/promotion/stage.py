"""The promotion step: compare the run's model with the last promoted version, gate, register.

``promote`` reads the scoring output (each suite's headline number), the data fingerprint the
sourcing stats recorded, and the model's URI (``pointer.json`` of the multi-node launcher wins:
it names the checkpoint on the shared volume). It finds the newest LIVE version of
``model_name`` in the registry, reports each suite's change against it and registers the model
as a new version when the gate passes. The same model as the last promoted version (a run
served from the cache) is not registered again. A blocked model ends the step with
"not promoted: <reason>", or fails it when ``fail_on_block`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from longalign import __version__
from longalign.config import PromotionConfig
from longalign.errors import UserError
from longalign.io import atomic_dir, read_json, write_json
from longalign.promotion.gate import gate, table
from longalign.promotion.index import LocalIndex
from longalign.results import StageResult

log = logging.getLogger("longalign")
SCORE_PREFIX = "score:"


def open_registry(config: PromotionConfig):
    """The registry backend the config names (local file index or Kubeflow Model Registry)."""
    if config.registry == "kubeflow":
        from longalign.promotion.kubeflow import KubeflowRegistry

        return KubeflowRegistry(config)
    from longalign.models import cache_root

    return LocalIndex(config.index_dir or cache_root() / "registry")


def suite_scores(scores_dir: str | os.PathLike) -> tuple[dict[str, float], str]:
    """Each suite's headline number for the fine-tuned model, and a digest of the scoring config."""
    from longalign.scoring.evaluate import headline

    path = Path(scores_dir) / "scores.json"
    data = read_json(path)
    suites = (data.get("models", {}).get("model", {}) or {}).get("suites") if isinstance(data, dict) else None
    if not isinstance(suites, dict):
        raise UserError(f"{path} is not a longalign scores.json (no models.model.suites)")
    scores = {s: float(v) for s, summary in suites.items() if (v := headline(summary)) is not None}
    config = json.dumps(data.get("config") or {}, sort_keys=True)
    return scores, hashlib.sha256(config.encode()).hexdigest()


def data_fingerprint(corpus_dir: str | os.PathLike | None) -> str | None:
    if corpus_dir is None:
        return None
    stats = Path(corpus_dir) / "stats.json"
    fp = read_json(stats).get("data_fingerprint") if stats.is_file() else None
    return fp.get("digest") if isinstance(fp, dict) else None


def model_uri(model_dir: str | os.PathLike, uri: str | None = None) -> str:
    """Where the model lives: pointer.json's URI (multi-node launcher), else the artifact's URI."""
    pointer = Path(model_dir) / "pointer.json"
    if pointer.is_file():
        info = read_json(pointer)
        if isinstance(info, dict) and info.get("uri"):
            return str(info["uri"])
    return uri or str(Path(model_dir).resolve())


def _last_live(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    live = [v for v in versions if v.get("state") == "LIVE"]
    return live[-1] if live else None


def _previous_scores(version: dict[str, Any] | None) -> dict[str, float] | None:
    if version is None:
        return None
    props = version.get("properties") or {}
    return {k[len(SCORE_PREFIX):]: float(v) for k, v in props.items()
            if k.startswith(SCORE_PREFIX) and isinstance(v, (int, float))}


def promote(config: PromotionConfig, model_dir: str | os.PathLike, scores_dir: str | os.PathLike,
            output: str | os.PathLike, *, corpus_dir: str | os.PathLike | None = None,
            uri: str | None = None, run_id: str = "", base_model: str = "",
            overwrite: bool = False) -> StageResult:
    """Gate and register; writes ``decision.json`` and ``report.md`` into ``output`` and returns
    the StageResult whose stats are the decision (``status``: promoted, blocked or unchanged;
    ``message``; ``version``; ``comparison``)."""
    scores, scoring_digest = suite_scores(scores_dir)
    target = model_uri(model_dir, uri)
    fingerprint = data_fingerprint(corpus_dir)
    registry = open_registry(config)
    versions = registry.versions(config.model_name)
    last = _last_live(versions)
    result = gate(scores, _previous_scores(last), config.margins)
    notes = []
    if last is not None and (last.get("properties") or {}).get("scoring_config_sha256") not in (None, scoring_digest):
        notes.append(f"scoring settings differ from {last['version']}'s: the comparison is not like-for-like")
    decision: dict[str, Any] = {
        "model_name": config.model_name, "registry": registry.kind, "where": registry.where(config.model_name),
        "uri": target, "data_fingerprint": fingerprint, "pipeline_run_id": run_id,
        "last_promoted": None if last is None else {k: last.get(k) for k in ("version", "uri", "created")},
        "comparison": result["suites"], "notes": notes, "version": None,
    }
    if last is not None and last.get("uri") == target:
        decision["status"] = "unchanged"
        decision["message"] = (f"not promoted: this model is already {config.model_name} {last['version']} "
                               "(same artifact: the data and settings did not change)")
    elif not result["passed"]:
        decision["status"] = "blocked"
        decision["message"] = f"not promoted: {result['reason']} (against {config.model_name} {last['version']})"
    else:
        properties: dict[str, Any] = {f"{SCORE_PREFIX}{s}": v for s, v in scores.items()}
        properties.update({"data_fingerprint": fingerprint or "", "pipeline_run_id": run_id,
                           "base_model": base_model, "longalign_version": __version__,
                           "scoring_config_sha256": scoring_digest})
        version = registry.register(config.model_name, target, properties, author=config.author,
                                    description=f"longalign run {run_id}: {result['reason']}")
        decision.update(status="promoted", version=version,
                        message=f"promoted: {config.model_name} {version} ({result['reason']})")
    decision["metrics"] = {"promoted": int(decision["status"] == "promoted"),
                           **{f"{r['suite'].replace('-', '_')}_vs_promoted": round(r["delta"], 6)
                              for r in result["suites"] if r["delta"] is not None}}
    result = StageResult("promotion", Path(output), decision, metrics=decision["metrics"],
                         headline={"promoted": decision["metrics"]["promoted"]}, summary="report.md")
    with atomic_dir(output, overwrite=overwrite) as tmp:
        write_json(tmp / "decision.json", decision)
        (tmp / "report.md").write_text(report_markdown(decision))
        result.write(tmp)
    log.info("%s", decision["message"])
    if decision["status"] == "blocked" and config.fail_on_block:
        raise UserError(decision["message"])
    return result


def report_markdown(decision: dict[str, Any]) -> str:
    last = decision["last_promoted"]
    lines = ["# Promotion\n", f"**{decision['message']}**\n",
             f"Registry: {decision['registry']}, {decision['where']}. Model URI: `{decision['uri']}`. "
             f"Data fingerprint: `{decision['data_fingerprint']}`.\n",
             f"Compared with: {'nothing (no promoted version yet)' if last is None else last['version']}.\n"]
    if decision["comparison"]:
        lines.append(table(decision["comparison"]))
    lines += [f"- {note}\n" for note in decision["notes"]]
    return "\n".join(lines)
