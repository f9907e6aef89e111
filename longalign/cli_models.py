"""``longalign models``: the promoted versions in the registry the promotion section names.

``list`` shows them, ``archive`` rolls back (the newest LIVE version before it becomes the one the
gate compares with, and the one to serve), ``restore`` undoes that. Works on the local index of
``longalign run`` (``ROOT/registry``) and on the Kubeflow Model Registry alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# The same options as every other command (longalign.cli imports this module, so not from there).
PresetOpt = Annotated[str, typer.Option("--preset", help="Base configuration: default or tiny.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON file with config sections.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override, e.g. --set promotion.model_name=chat (the section may be omitted).")]

models_app = typer.Typer(no_args_is_help=True, help="Promoted model versions: list, archive (roll back), "
                         "restore. The registry is the config's promotion section.")
RootOpt = Annotated[Path, typer.Option(help="The run root of `longalign run` (its local index is "
                                            "ROOT/registry unless promotion.index_dir is set).")]


def _registry(preset: str, config: Optional[Path], sets: Optional[list[str]], root: Path):
    from longalign.cli import _config
    from longalign.orchestrate import local_promotion
    from longalign.promotion import open_registry

    promotion = local_promotion(_config(preset, config, sets, "promotion"), root)
    return promotion.model_name, open_registry(promotion)


@models_app.command("list")
def models_list(preset: PresetOpt = "default", config: ConfigOpt = None, set_: SetOpt = None,
                root: RootOpt = Path("local_outputs")) -> None:
    """Every registered version, oldest first: state, scores, data fingerprint, run, URI."""
    from rich.console import Console
    from rich.table import Table

    from longalign.promotion.stage import SCORE_PREFIX

    name, registry = _registry(preset, config, set_, root)
    table = Table(title=f"{name} in {registry.where(name)}")
    for column in ("version", "state", "scores", "data", "run", "uri"):
        table.add_column(column, overflow="fold")
    for v in registry.versions(name):
        props = v.get("properties") or {}
        scores = ", ".join(f"{k[len(SCORE_PREFIX):]} {float(s):.3f}" for k, s in sorted(props.items())
                           if k.startswith(SCORE_PREFIX))
        table.add_row(v["version"], str(v["state"]), scores, str(props.get("data_fingerprint", ""))[:12],
                      str(props.get("pipeline_run_id", "")), str(v.get("uri")))
    Console(soft_wrap=True).print(table)


def _set_state(version: str, state: str, preset, config, sets, root) -> None:
    name, registry = _registry(preset, config, sets, root)
    registry.set_state(name, version, state)
    live = [v["version"] for v in registry.versions(name) if v["state"] == "LIVE"]
    typer.echo(f"{name} {version}: {state}; last promoted is now {live[-1] if live else 'none'}")


@models_app.command("archive")
def models_archive(version: Annotated[str, typer.Argument(help="e.g. v3")], preset: PresetOpt = "default",
                   config: ConfigOpt = None, set_: SetOpt = None, root: RootOpt = Path("local_outputs")) -> None:
    """Roll back: archive a version, so the newest LIVE one before it is the one to beat (and serve)."""
    _set_state(version, "ARCHIVED", preset, config, set_, root)


@models_app.command("restore")
def models_restore(version: Annotated[str, typer.Argument(help="e.g. v3")], preset: PresetOpt = "default",
                   config: ConfigOpt = None, set_: SetOpt = None, root: RootOpt = Path("local_outputs")) -> None:
    """Undo an archive: the version is LIVE again."""
    _set_state(version, "LIVE", preset, config, set_, root)
