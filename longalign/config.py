"""Typed configuration: one section per stage, named like the stage's subpackage.

The same section is what the CLI subcommand reads, what the KFP component receives as its
``config`` parameter (a JSON object), and what the pipeline exposes as one parameter per stage.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from longalign.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourcingConfig(_Section):
    """Where long texts come from and which of them are kept."""

    sources: list[str] = Field(default_factory=lambda: ["stdlib:"], min_length=1)
    min_tokens: int = Field(8192, ge=1)
    max_tokens: int = Field(65536, ge=1)
    split_long: bool = True  # split over-long documents at paragraph boundaries instead of dropping
    max_documents: int | None = Field(None, ge=1)
    seed: int = 0
    strict: bool = False  # the first unreadable input is fatal instead of a counted skip

    @model_validator(mode="after")
    def _check_range(self) -> "SourcingConfig":
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) > max_tokens ({self.max_tokens})")
        return self


class GenerationConfig(_Section):
    """Self-Instruct over long documents (LongAlign section 2) plus synthetic recall tasks."""

    teacher: Literal["local", "synthetic"] = "local"
    teacher_model: str = "embedded:smollm2"
    teacher_documents: int | None = Field(None, ge=0)  # documents given to the teacher (None: all)
    synthetic_per_document: int = Field(0, ge=0)  # extra exact-answer recall tasks per document
    teacher_context_tokens: int = Field(6144, ge=256)  # longer documents are middle-truncated
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0


class PackingConfig(_Section):
    """Tokenisation and packing into Arrow rows (LongAlign section 3)."""

    strategy: Literal["pack", "sort", "naive"] = "pack"
    max_len: int = Field(65536, ge=16)
    batch_size: int = Field(1, ge=1)  # samples per batch for sort / naive (pack: one row per batch)
    truncation: Literal["drop", "middle"] = "drop"  # samples longer than max_len
    label_turns: Literal["all", "last"] = "all"  # which assistant turns carry labels
    seed: int = 0


class TrainingConfig(_Section):
    """Fine-tuning on packed rows with LongAlign's loss weighting."""

    loss: Literal["longalign", "token"] = "longalign"
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    seed: int = 0


class ScoringConfig(_Section):
    """Offline long-context checks (and, later, LongBench-Chat)."""

    suites: list[Literal["needle", "recall"]] = Field(
        default_factory=lambda: ["needle", "recall"], min_length=1
    )
    lengths: list[int] = Field(default_factory=lambda: [2048, 4096], min_length=1)
    depths: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=1)
    recall_samples: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    compare_base: bool = True
    seed: int = 0


STAGES = ("sourcing", "generation", "packing", "training", "scoring")
SECTIONS: dict[str, type[_Section]] = {
    "sourcing": SourcingConfig,
    "generation": GenerationConfig,
    "packing": PackingConfig,
    "training": TrainingConfig,
    "scoring": ScoringConfig,
}


class RunConfig(_Section):
    """The whole pipeline: the base model plus one section per stage."""

    model: str = "embedded:smollm2"
    sourcing: SourcingConfig = SourcingConfig()
    generation: GenerationConfig = GenerationConfig()
    packing: PackingConfig = PackingConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()


# The embedded default fits a 2-core laptop in minutes: short "long" documents that the
# 8k-context SmolLM2 can read, a few teacher calls, one short epoch.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "model": "embedded:smollm2",
        "sourcing": {"sources": ["stdlib:"], "min_tokens": 1024, "max_tokens": 2048,
                     "max_documents": 6},
        "generation": {"teacher": "local", "teacher_model": "embedded:smollm2",
                       "teacher_documents": 3, "synthetic_per_document": 1,
                       "teacher_context_tokens": 2048, "max_new_tokens": 96},
        "packing": {"strategy": "pack", "max_len": 4096},
        "training": {"epochs": 1, "learning_rate": 2e-5},
        "scoring": {"suites": ["needle", "recall"], "lengths": [1024, 2048],
                    "depths": [0.1, 0.5, 0.9], "recall_samples": 3, "max_new_tokens": 24},
    },
    "tiny": {
        "model": "embedded:tiny",
        "sourcing": {"sources": ["stdlib:"], "min_tokens": 256, "max_tokens": 2048,
                     "max_documents": 6},
        "generation": {"teacher": "synthetic", "synthetic_per_document": 2},
        "packing": {"strategy": "pack", "max_len": 2048},
        "training": {"epochs": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0},
        "scoring": {"suites": ["needle", "recall"], "lengths": [512], "depths": [0.25, 0.75],
                    "recall_samples": 2, "max_new_tokens": 8, "compare_base": True},
    },
}


def _format_validation_error(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}{'.' if where and loc else ''}{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_section(stage: str, data: dict[str, Any] | None) -> _Section:
    """Validate one stage's section; a bad value raises a one-line UserError."""
    if stage not in SECTIONS:
        raise UserError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    try:
        return SECTIONS[stage].model_validate(data or {})
    except ValidationError as exc:
        raise UserError(f"invalid config: {_format_validation_error(exc, stage)}") from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
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


def load_run_config(
    preset: str = "default",
    file_data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build a RunConfig from a preset, an optional config-file mapping and ``key.path=value`` overrides."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    data = copy.deepcopy(PRESETS[preset])  # overrides below must never touch the presets
    if file_data:
        if not isinstance(file_data, dict):
            raise UserError("a config file must hold a mapping of sections")
        data = _deep_merge(data, file_data)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE (e.g. training.epochs=1), got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = parse_value(value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"invalid config: {_format_validation_error(exc, '')}") from None
