"""What ``longalign models`` does: list the promoted versions, archive one (the rollback), restore one.

Works on whichever registry the promotion section names (the local index or the Kubeflow Model
Registry). Archiving a version makes the newest LIVE version before it the one the gate compares
with, and the one to serve.
"""

from __future__ import annotations

from longalign.config import PromotionConfig
from longalign.errors import UserError
from longalign.promotion.stage import SCORE_PREFIX, open_registry

ACTIONS = {"list": None, "archive": "ARCHIVED", "restore": "LIVE"}


def listing(versions: list[dict]) -> list[str]:
    """One line per version: name, state, scores, data fingerprint, run id, URI."""
    lines = []
    for v in versions:
        props = v.get("properties") or {}
        scores = ", ".join(f"{k[len(SCORE_PREFIX):]} {float(s):.3f}" for k, s in sorted(props.items())
                           if k.startswith(SCORE_PREFIX))
        lines.append(f"{v['version']}  {v['state']}  {scores or '-'}  data {str(props.get('data_fingerprint') or '-')[:12]}"
                     f"  run {props.get('pipeline_run_id') or '-'}  {v.get('uri')}")
    return lines


def models_command(config: PromotionConfig, action: str, version: str | None = None) -> str:
    """The text ``longalign models ACTION [VERSION]`` prints."""
    if action not in ACTIONS:
        raise UserError(f"unknown action {action!r}: use list, archive VERSION or restore VERSION")
    if (ACTIONS[action] is None) != (version is None):
        raise UserError(f"'{action}' takes {'no version' if ACTIONS[action] is None else 'a VERSION, e.g. v3'}")
    registry = open_registry(config)
    name = config.model_name
    if action == "list":
        versions = registry.versions(name)
        return "\n".join([f"{name} in {registry.where(name)}: {len(versions)} version(s)", *listing(versions)])
    registry.set_state(name, version, ACTIONS[action])
    live = [v["version"] for v in registry.versions(name) if v["state"] == "LIVE"]
    return f"{name} {version}: {ACTIONS[action]}; last promoted is now {live[-1] if live else 'none'}"
