"""Source specs: ``scheme:TARGET[#field][?key=value&key=value]``.

The target is a path (``dir:``, ``jsonl:``, ``parquet:``, ``git:``, ``stdlib:``) or a dataset
name (``hf:NAME[:config][:split]``). Options after ``?`` tune one source:

- ``field``: the text field of ``jsonl:``, ``parquet:`` and ``hf:`` rows (default ``text``;
  ``#field`` right after the target is the older spelling of the same);
- ``group``: the name the source carries in the config's ``mix`` (default: the spec itself);
- ``min_tokens`` / ``max_tokens``: this source's own length range (e.g. for short data in a mix);
- ``include`` / ``exclude``: comma-separated glob patterns (``dir:``, ``git:``);
- ``max_file_bytes`` / ``max_doc_bytes``: size caps of one file / one repository document (``git:``);
- ``each``: ``git:`` only, ``true`` makes every immediate subdirectory its own repository document;
- ``follow_links``: ``dir:``, ``git:``; links to files and folders are followed (default ``true``;
  each real folder is walked once, so a link loop ends); ``false`` skips them, counted.

A target that exists on disk as written is never cut at ``#`` or ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from longalign.config import MAX_TOKENS
from longalign.errors import UserError

SCHEMES = ("stdlib", "dir", "jsonl", "parquet", "hf", "git")
COMMON = {"group", "min_tokens", "max_tokens"}
ALLOWED = {
    "stdlib": COMMON,
    "dir": COMMON | {"include", "exclude", "follow_links"},
    "jsonl": COMMON | {"field"},
    "parquet": COMMON | {"field"},
    "hf": COMMON | {"field"},
    "git": COMMON | {"include", "exclude", "max_file_bytes", "max_doc_bytes", "each", "follow_links"},
}
INTEGER = {"min_tokens", "max_tokens", "max_file_bytes", "max_doc_bytes"}
BOOLEAN = {"each", "follow_links"}
USAGE = ("stdlib:, dir:PATH, jsonl:PATH[#field], parquet:PATH[#field], hf:NAME[:config][:split], "
         "git:PATH, each optionally followed by ?key=value&...")


@dataclass(frozen=True)
class SourceSpec:
    spec: str  # the text as the user wrote it (stats are keyed by it)
    scheme: str
    target: str
    options: dict = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.options.get(key, default)

    @property
    def group(self) -> str:
        return self.options.get("group", self.spec)

    def patterns(self, key: str) -> list[str]:
        return [p for p in self.options.get(key, "").split(",") if p]


def _exists(target: str) -> bool:
    return bool(target) and Path(target).expanduser().exists()


def parse_spec(spec: str) -> SourceSpec:
    """Split a spec into scheme, target and checked options; any mistake is a UserError."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SCHEMES:
        raise UserError(f"unknown source {spec!r}: use one of {USAGE}")
    options: dict = {}
    target = rest
    if "?" in rest and not _exists(rest):
        target, _, query = rest.rpartition("?")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise UserError(f"source {spec!r}: options after '?' must be key=value&key=value") from None
        for key, value in pairs:
            if key not in ALLOWED[scheme]:
                raise UserError(f"source {spec!r}: unknown option {key!r} for {scheme}: "
                                f"(allowed: {', '.join(sorted(ALLOWED[scheme]))})")
            if key in INTEGER:
                if not value.isdigit() or int(value) < 1:
                    raise UserError(f"source {spec!r}: option {key} must be a positive integer")
                if key in ("min_tokens", "max_tokens") and int(value) > MAX_TOKENS:
                    raise UserError(f"source {spec!r}: option {key} must be at most {MAX_TOKENS}")
                options[key] = int(value)
            elif key in BOOLEAN:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise UserError(f"source {spec!r}: option {key} must be true or false")
                options[key] = value.lower() in ("true", "1")
            else:
                options[key] = value
    if "#" in target and scheme in ("jsonl", "parquet", "hf") and not _exists(target):
        target, _, text_field = target.rpartition("#")
        if not text_field:
            raise UserError(f"source {spec!r}: empty field name after '#'")
        options.setdefault("field", text_field)
    if scheme != "stdlib" and not target:
        raise UserError(f"source {spec!r} needs a path, e.g. {scheme}:/data/texts")
    low, high = options.get("min_tokens"), options.get("max_tokens")
    if low is not None and high is not None and low > high:
        raise UserError(f"source {spec!r}: min_tokens ({low}) > max_tokens ({high})")
    return SourceSpec(spec, scheme, target, options)
