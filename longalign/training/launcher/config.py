"""The launcher's config: ``LauncherConfig`` is the ``launcher`` section of the run config
(longalign.config.launcher); here the pipeline's per-run parameters are applied to it."""

from __future__ import annotations

from typing import Any

from longalign.config import LauncherConfig, parse_section
from longalign.errors import UserError

# Pipeline parameters that may override launcher_config fields; these values mean "not given".
_UNSET = ("", -1, None, {}, [])


def parse_launcher_config(data: dict[str, Any] | None,
                          overrides: dict[str, Any] | None = None) -> LauncherConfig:
    """Validate a launcher config mapping, with ``overrides`` (field: value) applied where their
    value is given (not "", -1, None, {} or []); a bad value, or an override that contradicts a
    value set in ``data``, raises a one-line UserError."""
    merged = dict(data or {})
    given = {k: v for k, v in (overrides or {}).items()
             if not any(v == u and type(v) is type(u) for u in _UNSET)}
    clash = sorted(k for k, v in given.items() if k in merged and merged[k] != v)
    if clash:
        raise UserError("invalid config: " + "; ".join(
            f"launcher.{k}={merged[k]!r} contradicts the pipeline parameter ({given[k]!r}); "
            "set it in one place" for k in clash))
    merged.update(given)
    return parse_section("launcher", merged)
