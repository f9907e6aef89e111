"""The ``training`` section: the objective, LongAlign's loss and batching, the optimizer and its
schedule, RoPE settings, memory savers and the distributed backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from longalign.config.base import CPU_BF16, MAX_TOKENS
from longalign.config.base import Section as _Section


class TrainingConfig(_Section):
    """Fine-tuning on packed rows with LongAlign's loss weighting."""

    objective: Literal["finetune", "pretrain"] = Field("finetune", description=(
        "finetune: the loss named by loss; pretrain: continued pre-training on text rows "
        "(ProLong): the token-averaged loss over each whole optimizer step (loss must be "
        "left unset or be token)"))
    document_masking: bool = Field(True, description=(
        "attention and positions restart at every packed sample; false (ablation, ProLong's "
        "single_seq): each row is one sequence, and in text rows the first token of every "
        "document but the row's first becomes a target too"))
    loss: Literal["longalign", "token"] = Field(
        "longalign", description="longalign: mean over sequences of each sequence's mean token loss "
        "(LongAlign Eq. 4); token: mean over all target tokens of the step")
    learning_rate: float = Field(
        2e-5, gt=0, description="peak learning rate of AdamW (torch, fused kernel), cosine schedule "
        "after the warm-up")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the optimizer steps spent warming up")
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="floor of the cosine decay as a share of the peak learning "
        "rate (LongAlign: 0; ProLong: 0.1, the extend pipeline's default)")
    adam_beta1: float = Field(0.9, description="AdamW beta1")
    adam_beta2: float = Field(0.95, description="AdamW beta2")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    epochs: int = Field(2, ge=1, description="passes over the packed data (max_steps wins when set)")
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps, cycling epochs (null: epochs decide)")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="micro-batches per rank per optimizer step")
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
    gradient_checkpointing: bool = Field(
        False, description="recompute each decoder layer in backward (non-reentrant)")
    seed: int = Field(0, description="seed of the batch order and dropout")
    cross_entropy: Literal["chunked", "liger"] = Field(
        "chunked", description="LM head + cross-entropy: chunked (the head over at most ce_chunk_size "
        "target positions at a time, recomputed in backward) or liger (Liger's fused kernel, GPU extra)")
    ce_chunk_size: int = Field(
        2048, ge=1, le=MAX_TOKENS, description="target positions per head chunk (cross_entropy=chunked)")
    distributed: Literal["ddp", "deepspeed", "fsdp2"] = Field(
        "ddp", description="ddp (also one process), deepspeed (see deepspeed_config) or fsdp2")
    deepspeed_config: str = Field(
        "zero3", description="zero2, zero3, zero3-offload or a DeepSpeed JSON file (distributed=deepspeed)")
    bf16: bool = Field(True, description="bf16 mixed precision on GPU (a CPU follows cpu_bf16)")
    cpu_bf16: bool = Field(False, description=CPU_BF16.format(
        what="bf16 autocast with fp32 weights and optimizer (distributed=ddp)"))
    checkpoint_dir: str | None = Field(
        None, description="where checkpoints go, a shared volume with several nodes (null: "
        "<output>.checkpoints, a sibling of the output)")
    checkpoint_every: int = Field(
        0, ge=0, description="optimizer steps between checkpoints (0: only SIGTERM)")
    checkpoints_kept: int = Field(2, ge=1, description="newest checkpoints kept; older ones are deleted")
    resume: bool = Field(
        False, description="continue from the newest checkpoint in checkpoint_dir (start at step 0 when "
        "there is none)")
    tensorboard_dir: str | None = Field(
        None, description="TensorBoard event files (null: tensorboard/ inside the output)")
    peak_tflops: float | None = Field(
        None, gt=0, description="per-device peak TFLOP/s for the MFU estimate (null: known GPUs only)")

    @model_validator(mode="before")
    @classmethod
    def _pretrain_loss(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("objective") == "pretrain":
            if data.get("loss", "token") != "token":
                raise ValueError("objective pretrain averages the loss over tokens: leave loss "
                                 "unset or set it to token")
            data = {**data, "loss": "token"}
        return data
