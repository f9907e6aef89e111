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
    # Quality filters (docs/sourcing.md); 0 / 1 switch a filter off.
    min_alpha_fraction: float = Field(0.25, ge=0, le=1)  # letters among non-space characters
    max_long_word_fraction: float = Field(0.5, ge=0, le=1)  # characters in 100+-character words
    max_repeated_line_fraction: float = Field(0.5, ge=0, le=1)  # characters in repeated lines
    # Near-duplicate removal (MinHash LSH); None switches it off.
    near_dup_threshold: float | None = Field(0.8, gt=0, lt=1)  # estimated Jaccard similarity
    near_dup_num_perm: int = Field(128, ge=16, le=1024)
    near_dup_ngram: int = Field(5, ge=1, le=32)  # words per shingle
    # Per-group shares of the output, e.g. {"code": 0.3, "books": 0.3, "short": 0.4}; a source's
    # group is its ?group= option or the spec itself. Shares are normalised to sum to 1.
    mix: dict[str, float] | None = None
    mix_unit: Literal["tokens", "documents"] = "tokens"

    @model_validator(mode="after")
    def _check_range(self) -> "SourcingConfig":
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) > max_tokens ({self.max_tokens})")
        if self.mix is not None and (not self.mix or any(v <= 0 for v in self.mix.values())):
            raise ValueError("mix needs at least one group and every share must be > 0")
        return self


class _Endpoint(_Section):
    """Fields every OpenAI-compatible chat-completions endpoint has (teacher, answerer, judge).

    The API key is read from the file at ``api_key_file`` (a mounted secret; wins when set) or the
    environment variable named by ``api_key_env``; both null: no key is sent. Never from the command
    line or the config itself (longalign.secrets).
    """

    api_key_env: str | None = "OPENAI_API_KEY"
    api_key_file: str | None = None
    concurrency: int = Field(8, ge=1, le=1024)  # requests in flight at once
    timeout_seconds: float = Field(600.0, gt=0)  # per request
    max_retries: int = Field(6, ge=0)  # on 429, 5xx, timeouts, dropped connections
    backoff_seconds: float = Field(1.0, gt=0, description=(
        "First retry delay in seconds; doubles per retry, with jitter (a Retry-After wins)."))
    backoff_max_seconds: float = Field(60.0, gt=0, description="Longest backoff delay in seconds.")
    max_retry_after_seconds: float = Field(600.0, gt=0, description=(
        "A longer Retry-After asked by the server is cut to this many seconds."))
    max_failure_rate: float = Field(0.1, ge=0, le=1, description=(
        "The run fails when more than this share of its requests fail after retries "
        "(or when none succeeds); see docs/generation.md, failure semantics."))
    allow_partial: bool = Field(False, description=(
        "Finish a run whose failure rate exceeds max_failure_rate (never one without any success); "
        "the stage's stats and summary then report it as partial."))
    price_prompt_per_million: float = Field(0.0, ge=0)  # for the cost estimate in stats (any currency)
    price_completion_per_million: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated cost of this usage at the configured prices (per million tokens)."""
        return (prompt_tokens * self.price_prompt_per_million
                + completion_tokens * self.price_completion_per_million) / 1e6

    @model_validator(mode="after")
    def _check_url(self):
        url = getattr(self, "base_url", None)
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        return self


class TeacherAPIConfig(_Endpoint):
    """The generation teacher's endpoint (generation.teacher = openai; the model name is
    generation.teacher_model). Retries back off exponentially with jitter and honour Retry-After."""

    base_url: str | None = None  # e.g. http://vllm.teachers.svc:8000/v1 (required for teacher=openai)
    temperature: float = Field(0.0, ge=0, le=2)
    chars_per_token: float = Field(3.5, gt=0)  # to fit documents into teacher_context_tokens


class GenerationConfig(_Section):
    """Self-Instruct over long documents (LongAlign section 2) plus synthetic recall tasks."""

    teacher: Literal["local", "openai", "synthetic"] = "local"
    teacher_model: str = "embedded:smollm2"  # local: a model spec; openai: the served model name
    teacher_documents: int | None = Field(None, ge=0)  # documents given to the teacher (None: all)
    synthetic_per_document: int = Field(0, ge=0)  # extra exact-answer recall tasks per document
    teacher_context_tokens: int = Field(131072, ge=256, description=(
        "The teacher's context window in tokens: a document that fits (with the prompt and "
        "max_new_tokens) reaches the teacher whole; only longer ones are middle-truncated and counted. "
        "The local teacher is further capped by its model's positions."))
    max_new_tokens: int = Field(256, ge=1)
    api: TeacherAPIConfig = TeacherAPIConfig()
    prompts_dir: str | None = None  # folder of prompt templates overriding the built-in ones
    work_dir: str | None = Field(None, description=(
        "Folder of the teacher's request journal, kept across runs so a rerun sends only what failed "
        "(None: $LONGALIGN_CACHE/generation; on a cluster a path on a persistent volume)."))
    short_data: str | None = None  # short chats to mix in: a JSONL file or a folder of Parquet/JSONL
    short_ratio: float = Field(0.0, ge=0)  # short chats per long sample
    seed: int = 0

    @model_validator(mode="after")
    def _check_teacher(self) -> "GenerationConfig":
        if self.teacher == "openai" and not self.api.base_url:
            raise ValueError("teacher=openai needs api.base_url (e.g. http://host:8000/v1)")
        if self.short_ratio > 0 and not self.short_data:
            raise ValueError("short_ratio > 0 needs short_data (a JSONL file of chats)")
        return self


class PackingConfig(_Section):
    """Tokenisation and packing into Arrow rows (LongAlign section 3)."""

    strategy: Literal["pack", "sort", "naive"] = "pack"
    max_len: int = Field(65536, ge=16)
    batch_size: int = Field(1, ge=1)  # samples per batch for sort / naive (pack: one row per batch)
    truncation: Literal["drop", "middle"] = "drop"  # samples longer than max_len
    label_turns: Literal["all", "last"] = "all"  # which assistant turns carry labels
    seed: int = 0
    chat_template: str = Field("tokenizer", min_length=1, description=(
        "How chats become text: 'tokenizer' (the model tokenizer's own template), 'llama2-inst' "
        "(LongAlign's Llama format '[INST]{user}[/INST]{assistant}', turns joined by a blank "
        "line), 'chatml', or a Jinja template string. The trained model's tokenizer carries it, "
        "so scoring prompts the model the way it was trained."))


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
    global_batch: int | None = Field(None, ge=1, description=(
        "Global batch per optimizer step, over all ranks: sequences for the sort and naive "
        "strategies, tokens (rows x max_len) for pack. When set, gradient_accumulation_steps "
        "is derived from it for the actual world size (so the batch does not grow with the "
        "node count); null: gradient_accumulation_steps as given."))
    max_grad_norm: float = Field(1.0, ge=0, description=(
        "Clip the step's gradient to this global L2 norm (0: no clipping); the same on one "
        "process, DDP, FSDP2 and DeepSpeed (its gradient_clipping is set to this)."))
    rank_balance: bool = Field(True, description=(
        "pack: deal each step's rows to the ranks so that their attention cost (sum of "
        "squared sample lengths plus a linear term) is balanced; false: every world_size-th row."))
    rope_theta: float | None = Field(None, gt=0, description=(
        "RoPE base set on the model before training and saved in its config (ProLong: 8e6 "
        "for 64k, 1.28e8 for 512k); null: the base model's."))
    rope_scaling: dict[str, Any] | None = Field(None, description=(
        "RoPE scaling set on the model config (e.g. {'rope_type': 'yarn', 'factor': 4.0}) for "
        "models whose config has rope_scaling; null: the base model's."))
    max_position_embeddings: int | None = Field(None, ge=1, description=(
        "Context window set on the model before training and saved in its config; "
        "null: the base model's."))
    gradient_checkpointing: bool = False
    seed: int = 0
    # LM head + cross-entropy: "chunked" runs the head over at most ce_chunk_size target positions
    # at a time (recomputed in backward); "liger" is Liger's fused kernel (GPU extra).
    cross_entropy: Literal["chunked", "liger"] = "chunked"
    ce_chunk_size: int = Field(2048, ge=1)
    # "ddp" (also one process), "deepspeed" (deepspeed_config: zero2, zero3, zero3-offload or
    # a JSON file) or "fsdp2"; bf16 applies on GPU only.
    distributed: Literal["ddp", "deepspeed", "fsdp2"] = "ddp"
    deepspeed_config: str = "zero3"
    bf16: bool = True
    checkpoint_dir: str | None = None  # None: a sibling of the output, "<output>.checkpoints"
    checkpoint_every: int = Field(0, ge=0)  # optimizer steps between checkpoints (0: only SIGTERM)
    checkpoints_kept: int = Field(2, ge=1)
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir, if any
    tensorboard_dir: str | None = None  # None: "tensorboard/" inside the output
    peak_tflops: float | None = Field(None, gt=0)  # per device, for MFU (None: known GPUs only)


class EndpointConfig(_Endpoint):
    """A served model for scoring (vLLM, TGI, KServe, a hosted API): an answerer or the judge."""

    base_url: str
    model: str
    concurrency: int = Field(4, ge=1, le=1024)
    timeout_seconds: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    context: int | None = Field(None, ge=64)  # served model's context in tokens (answerers only)


class LongBenchChatConfig(_Section):
    """LongBench-Chat (LongAlign section 4) judged by an OpenAI-compatible chat model."""

    data: str = "pinned"  # "pinned" (the pinned THUDM/LongAlign commit, cached) or a local directory
    test_cases: str | None = None  # a test_cases.json path overriding the one in ``data``
    test_cases_sha256: str | None = None  # expected digest of test_cases.json (checked when set)
    judge: EndpointConfig | None = None
    judge_runs: int = Field(2, ge=1, description="judge runs per answer, each with the three examples "
                            "in a seeded shuffled order (the paper: two)")
    judge_retries: int = Field(4, ge=0, description="extra judge calls for a reply without a rating "
                               "(eval.py makes up to 5 calls in all); then the run is reported unjudged")
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(1.0, ge=0)  # answer sampling (the benchmark samples at 1.0)
    context: int = Field(64000, ge=64, description="raw-prompt tokens kept before middle truncation "
                         "(eval.py's max_length); smaller when the model's window needs it")
    seed: int = Field(42, description="sampling seed set before every question's answer "
                      "(eval.py: seed_everything(42) per question)")
    flatten_newlines: bool = True  # the reference script judges answers with newlines as spaces
    limit: int | None = Field(None, ge=1)  # score only the first N questions (smoke runs)
    cache_dir: str | None = None  # judge-call and download cache (default: $LONGALIGN_CACHE/...)


class ScoringConfig(_Section):
    """Offline long-context checks and, with a judge endpoint, LongBench-Chat."""

    suites: list[Literal["needle", "recall", "longbench-chat"]] = Field(
        default_factory=lambda: ["needle", "recall"], min_length=1
    )
    lengths: list[int] = Field(default_factory=lambda: [2048, 4096], min_length=1)
    depths: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=1)
    recall_samples: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    compare_base: bool = True
    seed: int = 0
    endpoint: EndpointConfig | None = None  # answer with this served model instead of loading it
    base_endpoint: EndpointConfig | None = None  # the same for the base model
    baseline: str | None = None  # a previous run's scores.json (or its directory) to compare with
    contamination: Literal["mark", "refuse"] = Field(
        "mark", description="a suite sharing a task format with the fine-tuning data (e.g. recall/kv "
        "after kv_retrieval training samples): mark it in the report, or refuse to score")
    longbench_chat: LongBenchChatConfig = LongBenchChatConfig()

    @model_validator(mode="after")
    def _check_judge(self) -> "ScoringConfig":
        if "longbench-chat" in self.suites and self.longbench_chat.judge is None:
            raise ValueError("the longbench-chat suite needs longbench_chat.judge "
                             "(an OpenAI-compatible endpoint: base_url and model)")
        return self


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
                       "max_new_tokens": 96},
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
