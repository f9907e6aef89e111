"""Typed configuration: one section per stage, named like the stage's subpackage, plus the
multi-node ``launcher``; every field carries its description (docs/config.md and the CLI help are
generated from them).

The same section is what the CLI subcommand reads, what the KFP component receives as its
``config`` parameter (a JSON object), and what the pipeline exposes as one parameter per stage.
Unknown keys are errors, so a typo never silently falls back to a default. One loader,
:func:`load_run_config`, builds the whole config from a preset (``presets/*.yaml``), config files
and overrides.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from longalign.config.base import (DATA_MOUNT, PVC_NAME, deep_merge, parse_value, read_yaml, set_key,
                                   validate)
from longalign.config.base import CPU_BF16, MAX_TOKENS
from longalign.config.base import Section as _Section
from longalign.config.endpoints import EndpointConfig, TeacherAPIConfig
from longalign.config.launcher import LauncherConfig
from longalign.config.promotion import PromotionConfig
from longalign.config.training import TrainingConfig
from longalign.errors import UserError

__all__ = ["DATA_MOUNT", "MAX_TOKENS", "PVC_NAME", "EndpointConfig", "LauncherConfig", "PromotionConfig",
           "TeacherAPIConfig", "TrainingConfig", "RunConfig", "SECTIONS", "STAGES", "PRESETS",
           "load_run_config", "parse_section", "parse_value", "read_config_file", "describe"]


class SourcingConfig(_Section):
    """Where long texts come from and which of them are kept."""

    sources: list[str] = Field(
        default_factory=lambda: ["stdlib:"], min_length=1, description="source specs: stdlib:, dir:PATH, "
        "jsonl:PATH[#field], parquet:PATH[#field], hf:NAME[:config][:split], git:PATH, each with "
        "?key=value options (docs/sourcing.md)")
    min_tokens: int = Field(
        8192, ge=1, le=MAX_TOKENS, description="documents with fewer tokens (base model's tokenizer) are dropped")
    max_tokens: int = Field(
        65536, ge=1, le=MAX_TOKENS, description="longer documents are split at paragraph boundaries (split_long) "
        "or dropped")
    split_long: bool = Field(
        True, description="split over-long documents at paragraph boundaries instead of dropping")
    max_documents: int | None = Field(
        None, ge=1, description="stop after this many kept documents, read in a seeded random order "
        "(null: all)")
    seed: int = Field(0, description="seed of the reading order and the mix draws")
    strict: bool = Field(False, description="the first unreadable input is fatal instead of a counted skip")
    min_alpha_fraction: float = Field(
        0.25, ge=0, le=1, description="quality filter: least share of letters among non-space characters "
        "(0: off)")
    max_long_word_fraction: float = Field(
        0.5, ge=0, le=1, description="quality filter: most share of characters in 100+-character words (1: "
        "off)")
    max_repeated_line_fraction: float = Field(
        0.5, ge=0, le=1, description="quality filter: most share of characters in repeated lines (1: off)")
    near_dup_threshold: float | None = Field(
        0.8, gt=0, lt=1, description="near-duplicate removal (MinHash LSH): estimated Jaccard similarity "
        "from which a document counts as a near duplicate (null: off)")
    near_dup_num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    near_dup_ngram: int = Field(5, ge=1, le=32, description="words per shingle")
    mix: dict[str, float] | None = Field(
        None, description="per-group shares of the output, e.g. {code: 0.3, books: 0.3, short: 0.4}; a "
        "source's group is its ?group= option or the spec itself; shares are normalised to sum to 1 (null: "
        "no mix)")
    mix_unit: Literal["tokens", "documents"] = Field(
        "tokens", description="what the mix shares count: tokens or documents")
    fingerprint: Literal["stat", "content"] = Field(
        "stat", description="How the data fingerprint (the uncached step in front of sourcing that "
        "decides whether sourcing re-runs) compares the files of dir: sources, local hf: folders and "
        "git: trees without a commit: 'stat' by size and modification time, 'content' by SHA-256 of "
        "each file. jsonl: and parquet: files are always hashed, git: repositories count by commit.")
    workers: int = Field(1, ge=0, description=(
        "processes for the per-document work (decoding, filters, hashes, MinHash signatures, "
        "token counts; 0: one per core); dedup and the keep decisions stay in one process in the "
        "one-process order, so the corpus is the same for any value. Runs with max_documents or "
        "mix use one process"))

    @model_validator(mode="after")
    def _check_range(self) -> "SourcingConfig":
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) > max_tokens ({self.max_tokens})")
        if self.mix is not None and (not self.mix or any(v <= 0 for v in self.mix.values())):
            raise ValueError("mix needs at least one group and every share must be > 0")
        return self


class GenerationConfig(_Section):
    """Self-Instruct over long documents (LongAlign section 2) plus synthetic recall tasks."""

    teacher: Literal["local", "openai", "synthetic"] = Field(
        "local", description="local (a transformers model), openai (any OpenAI-compatible endpoint) or "
        "synthetic (exact-answer recall tasks only)")
    teacher_model: str = Field(
        "embedded:smollm2", description="local: a model spec; openai: the served model name")
    teacher_documents: int | None = Field(
        None, ge=0, description="documents given to the teacher (null: all)")
    synthetic_per_document: int = Field(0, ge=0, description="extra exact-answer recall tasks per document")
    teacher_context_tokens: int = Field(131072, ge=256, le=MAX_TOKENS, description=(
        "The teacher's context window in tokens: a document that fits (with the prompt and "
        "max_new_tokens) reaches the teacher whole; only longer ones are middle-truncated and counted. "
        "The local teacher is further capped by its model's positions."))
    max_new_tokens: int = Field(256, ge=1, le=MAX_TOKENS, description="tokens the teacher may generate per reply")
    cpu_bf16: bool = Field(False, description=CPU_BF16.format(what="the local teacher's weights in bf16"))
    api: TeacherAPIConfig = Field(TeacherAPIConfig(), description="the teacher endpoint (teacher=openai)")
    prompts_dir: str | None = Field(
        None, description="folder of prompt templates overriding the built-in ones")
    work_dir: str | None = Field(None, description=(
        "Folder of the teacher's request journal, kept across runs so a rerun sends only what failed "
        "(None: $LONGALIGN_CACHE/generation; on a cluster a path on a persistent volume)."))
    short_data: str | None = Field(
        None, description="short chats to mix in: a JSONL file or a folder of Parquet/JSONL")
    short_ratio: float = Field(0.0, ge=0, description="short chats per long sample")
    seed: int = Field(0, description="seed of document order, task types and synthetic tasks")

    @model_validator(mode="after")
    def _check_teacher(self) -> "GenerationConfig":
        if self.teacher == "openai" and not self.api.base_url:
            raise ValueError("teacher=openai needs api.base_url (e.g. http://host:8000/v1)")
        if self.short_ratio > 0 and not self.short_data:
            raise ValueError("short_ratio > 0 needs short_data (a JSONL file of chats)")
        return self


class PackingConfig(_Section):
    """Tokenisation and packing into Arrow rows (LongAlign section 3)."""

    strategy: Literal["pack", "sort", "naive"] = Field(
        "pack", description="pack: several samples per row, planned over the whole dataset "
        "(best-fit decreasing); sort: LongAlign's sorted batching, one sample per row, samples sorted by "
        "length and cut into batches of batch_size, batch order shuffled; naive: one sample per row, "
        "shuffled, batch_size per batch (the padded baseline)")
    max_len: int = Field(65536, ge=16, le=MAX_TOKENS, description="tokens per packed row (and the longest sample kept)")
    batch_size: int = Field(
        1, ge=1, description="samples per micro-batch for sort and naive (pack always has one row per "
        "micro-batch)")
    truncation: Literal["drop", "middle"] = Field(
        "drop", description="samples longer than max_len: drop skips and counts them (too_long); middle "
        "keeps the head and the tail, like LongBench-Chat's middle truncation")
    label_turns: Literal["all", "last"] = Field(
        "all", description="which assistant turns carry labels: all, or only the last")
    seed: int = Field(0, description="tie-breaking and row order of pack, batch order of sort and naive")
    chat_template: str = Field("tokenizer", min_length=1, description=(
        "How chats become text: 'tokenizer' (the model tokenizer's own template), 'llama2-inst' "
        "(LongAlign's Llama format '[INST]{user}[/INST]{assistant}', turns joined by a blank "
        "line), 'chatml', or a Jinja template string. The trained model's tokenizer carries it, "
        "so scoring prompts the model the way it was trained."))
    format: Literal["chat", "text"] = Field("chat", description=(
        "chat: the generation stage's chats through the chat template, assistant tokens as "
        "targets; text: the sourcing stage's documents as plain text (no template, EOS "
        "appended, every token a target) for continued pre-training"))
    split_long: bool = Field(True, description=(
        "text: a document longer than max_len is cut into max_len pieces (each a row of its "
        "own) and the remainder is packed like any other document; false: such documents "
        "follow truncation (drop, or keep the first and last halves)"))
    workers: int = Field(1, ge=0, description=(
        "processes that tokenise contiguous parts of the input in parallel (0: one per core); "
        "the parts are joined in input order before dedup and planning, so the rows are the "
        "same for any value"))
    tokens_per_file: int = Field(1 << 28, ge=1, description=(
        "a row file (rows-NNNNN.arrow) ends at the first micro-batch boundary once it holds "
        "this many tokens; in the sharded pipelines each file is written by a pod of its own"))


class LongBenchChatConfig(_Section):
    """LongBench-Chat (LongAlign section 4) judged by an OpenAI-compatible chat model."""

    data: str = Field(
        "pinned", description="pinned (the pinned THUDM/LongAlign commit, cached) or a local directory")
    test_cases: str | None = Field(None, description="a test_cases.json path overriding the one in data")
    test_cases_sha256: str | None = Field(
        None, description="expected digest of test_cases.json (checked when set)")
    judge: EndpointConfig | None = Field(
        None, description="the judge endpoint (required for the longbench-chat suite)")
    judge_runs: int = Field(2, ge=1, description="judge runs per answer, each with the three examples "
                            "in a seeded shuffled order (the paper: two)")
    judge_retries: int = Field(4, ge=0, description="extra judge calls for a reply without a rating "
                               "(eval.py makes up to 5 calls in all); then the run is reported unjudged")
    max_new_tokens: int = Field(1024, ge=1, description="answer tokens per question")
    temperature: float = Field(1.0, ge=0, description="answer sampling (the benchmark samples at 1.0)")
    context: int = Field(64000, ge=64, description="raw-prompt tokens kept before middle truncation "
                         "(eval.py's max_length); smaller when the model's window needs it")
    seed: int = Field(42, description="sampling seed set before every question's answer "
                      "(eval.py: seed_everything(42) per question)")
    flatten_newlines: bool = Field(
        True, description="the reference script judges answers with newlines as spaces")
    limit: int | None = Field(None, ge=1, description="score only the first N questions (smoke runs)")
    cache_dir: str | None = Field(
        None, description="judge-call and download cache (default: $LONGALIGN_CACHE/...)")


class ScoringConfig(_Section):
    """Offline long-context checks and, with a judge endpoint, LongBench-Chat."""

    @field_validator("lengths", "recall_lengths", "needle_lengths")
    @classmethod
    def _bounded_lengths(cls, lengths: list[int] | None) -> list[int] | None:
        if lengths is not None and any(n > MAX_TOKENS for n in lengths):
            raise ValueError(f"lengths must be at most {MAX_TOKENS} tokens")
        if lengths is not None and any(n < 1 for n in lengths):
            raise ValueError("lengths must be positive token counts")
        return lengths

    suites: list[Literal["needle", "ruler-needle", "recall", "short", "longbench-chat"]] = Field(
        default_factory=lambda: ["needle", "ruler-needle", "recall", "short"], min_length=1,
        description="needle: LongAlign's needle test; ruler-needle: a RULER-style 7-digit needle; "
        "recall: kv / multikey / vartrack; short: held-out short chats with exact answers (the "
        "short-task guard); longbench-chat: the judged benchmark (needs a judge)")
    needle_lengths: list[int] | None = Field(
        None, description="LongAlign needle context lengths in tokens (None: the reference's 10 from "
        "1,000 to 60,000, those beyond the model's window replaced by the window)")
    needle_depths: list[float] | None = Field(
        None, description="LongAlign needle depths in [0, 1] (None: the reference's 10 from 10% to 90%)")
    lengths: list[int] = Field(default_factory=lambda: [2048, 4096], min_length=1,
                               description="ruler-needle and recall haystack lengths in tokens")
    depths: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=1,
                                description="ruler-needle depths as fractions of the haystack")
    recall_lengths: list[int] | None = Field(
        None, description="recall context lengths in tokens (None: the largest of lengths)")
    recall_samples: int = Field(4, ge=1, description="recall cases per task")
    max_new_tokens: int = Field(32, ge=1, le=MAX_TOKENS, description="answer tokens per case")
    compare_base: bool = Field(True, description="also score the base model, for the comparison")
    cpu_bf16: bool = Field(False, description=CPU_BF16.format(what="local models' weights in bf16"))
    seed: int = Field(0, description="seed of needles, depths and recall cases")
    endpoint: EndpointConfig | None = Field(
        None, description="answer with this served model instead of loading it")
    base_endpoint: EndpointConfig | None = Field(None, description="the same for the base model")
    baseline: str | None = Field(
        None, description="a previous run's scores.json (or its directory) to compare with")
    contamination: Literal["mark", "refuse"] = Field(
        "mark", description="a suite sharing a task format with the fine-tuning data (e.g. recall/kv "
        "after kv_retrieval training samples): mark it in the report, or refuse to score")
    longbench_chat: LongBenchChatConfig = Field(LongBenchChatConfig(), description="LongBench-Chat settings")

    @model_validator(mode="after")
    def _check_judge(self) -> "ScoringConfig":
        if "longbench-chat" in self.suites and self.longbench_chat.judge is None:
            raise ValueError("the longbench-chat suite needs longbench_chat.judge "
                             "(an OpenAI-compatible endpoint: base_url and model)")
        return self


class ExtendConfig(_Section):
    """Context extension before alignment (the longalign-extend pipeline): the sourcing corpus
    packed as plain text, then continued pre-training with a larger RoPE base. Defaults follow
    ProLong's 64k stage (train_64K.sh): theta 8e6, 64k rows, lr 1e-5, 10% warmup, weight decay
    0.1, 4M-token batches (docs/extend.md)."""

    packing: PackingConfig = Field(
        PackingConfig(format="text", max_len=65536),
        description="the text packing task's packing section (format text)")
    training: TrainingConfig = Field(
        TrainingConfig(objective="pretrain", rope_theta=8e6, max_position_embeddings=65536,
                       learning_rate=1e-5, warmup_ratio=0.1, min_lr_ratio=0.1, weight_decay=0.1,
                       epochs=1, global_batch=64 * 65536, gradient_checkpointing=True),
        description="the pretrain task's training section (objective pretrain)")


STAGES = ("sourcing", "generation", "packing", "training", "scoring")
SECTIONS: dict[str, type[_Section]] = {
    "sourcing": SourcingConfig,
    "generation": GenerationConfig,
    "packing": PackingConfig,
    "training": TrainingConfig,
    "scoring": ScoringConfig,
    "launcher": LauncherConfig,
    "promotion": PromotionConfig,
}


class RunConfig(_Section):
    """The whole pipeline: the base model, one section per stage and the multi-node launcher."""

    base_model: str = Field(
        "embedded:smollm2", description="the base model, what is fine-tuned: embedded:NAME, a local "
        "directory or a hub id")
    sourcing: SourcingConfig = Field(SourcingConfig(), description="the sourcing stage")
    generation: GenerationConfig = Field(GenerationConfig(), description="the generation stage")
    packing: PackingConfig = Field(PackingConfig(), description="the packing stage")
    training: TrainingConfig = Field(TrainingConfig(), description="the training stage")
    scoring: ScoringConfig = Field(ScoringConfig(), description="the scoring stage")
    launcher: LauncherConfig = Field(
        LauncherConfig(), description="the multi-node training job (the longalign-multinode pipeline)")
    promotion: PromotionConfig = Field(
        PromotionConfig(), description="the promotion gate at the end of a run and the model registry")
    extend: ExtendConfig = Field(ExtendConfig(), description=(
        "text packing and continued pre-training before generation (longalign-extend only)"))


PRESET_DIR = Path(__file__).with_name("presets")


# Preset name -> its data, from the packaged presets/<name>.yaml files.
PRESETS: dict[str, dict[str, Any]] = {
    p.stem: read_yaml(p, "preset") for p in sorted(PRESET_DIR.glob("*.yaml"))}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON config file's sections (a UserError for an unreadable or malformed file)."""
    return read_yaml(Path(path), "config file")


def parse_section(stage: str, data: dict[str, Any] | None) -> _Section:
    """Validate one section (a stage's or ``launcher``); a bad value raises a one-line UserError."""
    if stage not in SECTIONS:
        raise UserError(f"unknown section {stage!r}; sections are {', '.join(SECTIONS)}")
    return validate(SECTIONS[stage], data, stage)


def load_run_config(
    preset: str = "default",
    file_data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    *,
    files: list[str | Path] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """The one config loader: a preset, then config ``files`` (and ``file_data``, an already read
    mapping), then ``key.path=value`` ``overrides`` (values parsed as JSON when they parse), then
    ``values`` (key path -> value, e.g. from CLI flags; None means not given), in that order."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    data = copy.deepcopy(PRESETS[preset])  # overrides below must never touch the presets
    for extra in [read_config_file(f) for f in files or []] + [file_data or {}]:
        if not isinstance(extra, dict):
            raise UserError("a config file must hold a mapping of sections")
        data = deep_merge(data, extra)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE (e.g. training.epochs=1), got {item!r}")
        set_key(data, key, parse_value(value))
    for key, value in (values or {}).items():
        if value is not None:
            set_key(data, key, copy.deepcopy(value))
    return validate(RunConfig, data, "")


def describe(key: str) -> str:
    """The description of a config key path such as ``sourcing.min_tokens``, as a sentence (CLI
    help texts)."""
    from longalign.config.reference import model_of

    model: Any = RunConfig
    field = None
    for part in key.split("."):
        if field is not None:
            model = model_of(field.annotation)
        field = model.model_fields[part]
    assert field is not None and field.description, f"{key} has no description"
    text = field.description[0].upper() + field.description[1:]
    return text if text.endswith(".") else text + "."
