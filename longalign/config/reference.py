"""docs/config.md, generated from the config models: every key with its type, default and
description. ``python -m longalign.config.reference docs/config.md`` (``make compile``) rewrites it;
a test fails when the committed file differs from what the models give."""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from longalign.config import PRESETS, RunConfig

HEADER = """# Configuration reference

<!-- Generated from longalign/config (python -m longalign.config.reference docs/config.md);
     do not edit by hand: tests/test_config_reference.py fails when this file is stale. -->

A run's configuration is built by one loader, in this order: a preset (`--preset`, default
`default`; the packaged files in `longalign/config/presets/`), config files (`--config`, YAML or
JSON with the sections below), `--set key.path=value` overrides (the value is parsed as JSON when
it parses) and the command's own flags. The same sections are the pipeline's `*_config`
parameters. Unknown keys are errors. API keys are never config values: see `api_key_env` and
`api_key_file`.

Presets: {presets}.
"""


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation such as ``EndpointConfig | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value)}`"


def _sections(model: type[BaseModel], path: str, found: dict[type[BaseModel], list[str]]) -> None:
    found.setdefault(model, []).append(path)
    for name, field in model.model_fields.items():
        inner = model_of(field.annotation)
        if inner is not None:
            _sections(inner, f"{path}.{name}" if path else name, found)


def reference() -> str:
    """The text of docs/config.md."""
    found: dict[type[BaseModel], list[str]] = {}
    _sections(RunConfig, "", found)
    out = [HEADER.format(presets=", ".join(f"`{p}`" for p in PRESETS))]
    for model, paths in found.items():
        where = ", ".join(f"`{p}`" for p in paths if p) or "top level"
        doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
        out += [f"## {model.__name__}", "", f"{doc} Keys under {where}.", "",
                "| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | "
                       f"{description} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if target is None:
        print(reference(), end="")
    else:
        target.write_text(reference())
        print(f"wrote {target}")
