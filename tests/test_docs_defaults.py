"""The hand-written option tables in the stage docs name real config fields with their real
defaults (docs/config.md is generated; these tables add context and drift when a default moves)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from longalign.config import RunConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
# (doc, the table's header, the config section its options belong to: "" for full keys)
TABLES = [
    ("generation.md", "| option (`generation.api.*`) | default | meaning |", "generation.api"),
    ("generation.md", "| option | default | meaning |", "generation"),
    ("sourcing.md", "| config field | default | meaning |", "sourcing"),
    ("scale.md", "| config key | default | what runs in the workers | what stays in one process |", ""),
]
SKIP = {"see above"}  # a default described elsewhere on the page


def table_rows(doc: str, header: str) -> list[tuple[list[str], list[str]]]:
    """(names, defaults) of each row of the table under ``header`` in ``doc``."""
    lines = (DOCS / doc).read_text().splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([a-z0-9_.]+)`", cells[0])
        rows.append((names, [d.strip() for d in split_defaults(cells[1], len(names))]))
    return rows


def split_defaults(cell: str, n: int) -> list[str]:
    if n == 1:
        return [cell]
    parts = re.split(r",\s*(?![^\[]*\])", cell)
    assert len(parts) == n, f"{n} options but defaults {cell!r}"
    return parts


def parse_default(text: str):
    """The value a table cell means: none/null/all are None, true/false, numbers, `strings`,
    JSON lists."""
    word = text.split(" (")[0].strip()
    if word in ("none", "null", "all"):
        return None
    if word in ("true", "false"):
        return word == "true"
    if word.startswith("`") and word.endswith("`"):
        inner = word.strip("`")
        return json.loads(inner) if inner.startswith("[") else inner
    return float(word)


def field_default(dotted: str):
    model: type[BaseModel] = RunConfig
    *path, name = dotted.split(".")
    for part in path:
        model = model.model_fields[part].annotation
    assert name in model.model_fields, f"{dotted}: not a config field"
    field = model.model_fields[name]
    return field.default_factory() if field.default_factory else field.default


@pytest.mark.parametrize("doc, header, section", TABLES)
def test_option_tables_match_the_config(doc, header, section):
    rows = table_rows(doc, header)
    assert rows, f"no rows under {header!r} in {doc}"
    checked = 0
    for names, defaults in rows:
        for name, text in zip(names, defaults):
            actual = field_default(f"{section}.{name}" if section else name)
            if text in SKIP:
                continue
            expected = parse_default(text)
            if isinstance(expected, float) and not isinstance(actual, bool):
                assert actual == pytest.approx(expected), f"{doc}: {name} is {actual}, the table says {text}"
            else:
                assert actual == expected, f"{doc}: {name} is {actual!r}, the table says {text}"
            checked += 1
    assert checked >= len(rows)
