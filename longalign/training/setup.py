"""What the stage settles before the first step: the model config's RoPE and context window,
and the resolved global batch (accumulation for the actual world size)."""

from __future__ import annotations

import logging
from typing import Any

from longalign.config import TrainingConfig
from longalign.errors import UserError

log = logging.getLogger("longalign")


def rope_overrides(config: TrainingConfig) -> bool:
    return any(v is not None for v in (config.rope_theta, config.rope_scaling,
                                       config.max_position_embeddings))


def apply_rope(model_config: Any, config: TrainingConfig, model: str = "the model") -> None:
    """Set ``rope_theta``, ``rope_scaling`` and ``max_position_embeddings`` on a transformers
    config before the model is built from it (the rotary tables are computed from the config
    when the model is created, so setting them afterwards would change nothing but the file).

    transformers 5 keeps the RoPE settings in ``config.rope_parameters`` (``rope_theta``,
    ``rope_type`` and the scaling's own keys); a model without it has no RoPE to change."""
    if config.max_position_embeddings is not None:
        if not hasattr(model_config, "max_position_embeddings"):
            raise UserError(f"{model} has no max_position_embeddings to set")
        model_config.max_position_embeddings = config.max_position_embeddings
    if config.rope_theta is None and config.rope_scaling is None:
        return
    params = getattr(model_config, "rope_parameters", None)
    if not isinstance(params, dict):
        raise UserError(f"{model} ({type(model_config).__name__}) has no RoPE parameters: "
                        "leave rope_theta and rope_scaling unset")
    params = dict(params)
    if config.rope_scaling is not None:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        kind = config.rope_scaling.get("rope_type", config.rope_scaling.get("type"))
        if kind not in ("default", *ROPE_INIT_FUNCTIONS):
            raise UserError(f"rope_scaling: unknown rope_type {kind!r}; transformers knows "
                            f"{', '.join(['default', *ROPE_INIT_FUNCTIONS])}")
        params.update(config.rope_scaling)
    if config.rope_theta is not None:
        params["rope_theta"] = float(config.rope_theta)
    model_config.rope_parameters = params
    try:
        model_config.validate_rope()
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"invalid rope_scaling {config.rope_scaling!r}: {exc}") from None


def rope_summary(model_config: Any) -> dict[str, Any]:
    params = getattr(model_config, "rope_parameters", None) or {}
    return {"rope_theta": params.get("rope_theta"), "rope_type": params.get("rope_type"),
            "max_position_embeddings": getattr(model_config, "max_position_embeddings", None)}


def batch_unit(strategy: str, meta: dict[str, Any], batches: list[Any]) -> tuple[int, str]:
    """What one micro-batch counts toward the global batch, and the unit's name: ``max_len``
    tokens for pack (one row), its samples for sort and naive (the packing batch size)."""
    if strategy == "pack":
        return int(meta.get("max_len") or max(mb.width for mb in batches)), "tokens"
    size = (meta.get("config") or {}).get("batch_size")
    return int(size or max(len(mb.rows) for mb in batches)), "sequences"


def resolve_accumulation(global_batch: int | None, *, world_size: int, unit: int,
                         accumulation: int) -> tuple[int, int]:
    """Accumulation steps for ``world_size`` ranks and the global batch they make.

    With ``global_batch`` unset, ``accumulation`` is kept (the batch grows with the ranks).
    Otherwise accumulation = global_batch / (world_size * unit), rounded to the nearest integer
    and at least 1; the returned global batch is what that gives (equal to ``global_batch``
    whenever world_size * unit divides it)."""
    if global_batch is not None:
        accumulation = max(1, round(global_batch / (world_size * unit)))
    return accumulation, world_size * unit * accumulation


def resolved_batch(config: TrainingConfig, strategy: str, meta: dict[str, Any],
                   batches: list[Any], world_size: int) -> dict[str, Any]:
    unit, name = batch_unit(strategy, meta, batches)
    accumulation, total = resolve_accumulation(
        config.global_batch, world_size=world_size, unit=unit,
        accumulation=config.gradient_accumulation_steps)
    info = {"gradient_accumulation_steps": accumulation, "global_batch": total,
            "global_batch_unit": name, "global_batch_requested": config.global_batch,
            "micro_batch": unit}
    if config.global_batch is not None and config.global_batch < world_size * unit:
        raise UserError(f"global_batch {config.global_batch} {name} is less than one micro-batch "
                        f"on every rank ({world_size} x {unit} {name})")
    log.info("global batch: %d %s = %d rank(s) x %d %s per micro-batch x %d accumulation",
             total, name, world_size, unit, name, accumulation)
    if config.global_batch is not None and total != config.global_batch:
        log.warning("global_batch %d %s is not a multiple of %d rank(s) x %d: using %d",
                    config.global_batch, name, world_size, unit, total)
    return info
