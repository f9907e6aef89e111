"""What every config section shares: unknown keys are errors, values are frozen, and a bad value
becomes one ``invalid config: section.key: reason`` line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from longalign.errors import UserError

# Where the shared ReadWriteMany volume is mounted in every pod, and its claim's default name
# (k8s/base creates it). The images point HF_HOME and LONGALIGN_CACHE below the mount.
DATA_MOUNT = "/mnt/longalign"
PVC_NAME = "longalign-data"


# Ceiling of every token length in the config (packing.max_len, sourcing.max_tokens,
# scoring.lengths, ...): 2,097,152 tokens, four times ProLong's longest (512k). It is checked
# before anything is sized from these values, so a typo cannot allocate memory by the gigabyte.
MAX_TOKENS = 2 ** 21

# Description of every stage's ``cpu_bf16`` (longalign/precision.py).
CPU_BF16 = ("On a CPU, {what} where the CPU computes bf16 natively (AMX or AVX512-BF16: several "
            "times faster than fp32); fp32 on other CPUs, with a log line. "
            "LONGALIGN_CPU_BF16=0 turns it off.")


class Section(BaseModel):
    """Base of every config section."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=BaseModel)


def format_validation_error(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}{'.' if where and loc else ''}{loc}: {err['msg']}")
    return "; ".join(parts)


def validate(cls: type[S], data: Any, where: str) -> S:
    """``cls`` validated from ``data``; a bad value raises a one-line UserError."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as exc:
        raise UserError(f"invalid config: {format_validation_error(exc, where)}") from None


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                        "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{what} {path}{where}: not valid YAML/JSON: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of sections")
    return data or {}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value: JSON when it parses (numbers, lists, true/null), else a string."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value
