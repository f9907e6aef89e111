"""Attention that stays inside each sample of a packed row.

``longalign_sdpa`` is registered with ``transformers.AttentionInterface``. It runs
``scaled_dot_product_attention(is_causal=True)`` once per sample, so no L x L mask is ever built and
samples packed into one row never see each other. Sample boundaries come from, in this order:

1. ``longalign_seq_lens``: a per-row list of sample lengths (Python ints) that the training loop
   passes as a model kwarg; tokens after the last sample of a row (right padding) are skipped and
   their output is zero;
2. ``cu_seq_lens_q``: flash-attention style cumulative lengths (one row only);
3. ``position_ids`` restarts (a position that does not follow its predecessor starts a sample);
4. none of these: each row is one causal sequence.

Because transformers has no mask function for a custom implementation, it hands this function
``attention_mask=None`` whatever the caller passed, so a 2-D mask would be silently ignored.
:func:`install_input_guard` makes that (and the all-ones-mask-with-packed-rows trap) an error.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger("longalign")

ATTN_NAME = "longalign_sdpa"
_GQA_BY_REPEAT = False  # enable_gqa=True: as fast as repeating K/V on CPU, without the copies


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, n, d).reshape(b, h * n_rep, n, d)


def segments_from_position_ids(position_ids: torch.Tensor) -> list[list[int]]:
    """Per row, the lengths of its samples (a sample starts where positions do not count up)."""
    pos = position_ids.detach().to("cpu", torch.long)
    if pos.ndim == 1:
        pos = pos[None]
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    out = []
    for row in starts:
        idx = torch.nonzero(row).flatten().tolist() + [row.numel()]
        out.append([b - a for a, b in zip(idx[:-1], idx[1:])])
    return out


def _row_segments(batch: int, length: int, kwargs: dict[str, Any]) -> list[list[int]]:
    seq_lens = kwargs.get("longalign_seq_lens")
    if seq_lens is not None:
        if len(seq_lens) != batch:
            raise ValueError(f"longalign_seq_lens has {len(seq_lens)} rows for a batch of {batch}")
        for row in seq_lens:
            if sum(row) > length:
                raise ValueError(f"longalign_seq_lens {list(row)} exceed the row length {length}")
        return [list(row) for row in seq_lens]
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        if batch != 1:
            raise ValueError("cu_seq_lens_q is only meaningful for a single (flattened) row")
        edges = [int(x) for x in cu.tolist()]
        return [[b - a for a, b in zip(edges[:-1], edges[1:]) if b > a]]
    position_ids = kwargs.get("position_ids")
    if position_ids is not None and position_ids.shape[-1] == length:
        segs = segments_from_position_ids(position_ids)
        return segs * batch if len(segs) == 1 and batch > 1 else segs
    return [[length] for _ in range(batch)]


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Per-sample causal SDPA; query/key/value are (batch, heads, length, head_dim).

    Returns (batch, length, heads, head_dim) like the built-in implementations.
    """
    if kwargs.get("softcap") is not None:
        raise ValueError(f"{ATTN_NAME} does not support attention logit soft-capping")
    if attention_mask is not None:
        raise ValueError(f"{ATTN_NAME} takes no attention mask: pass sample boundaries instead")
    batch, _, q_len, _ = query.shape
    if key.shape[2] != q_len:
        raise ValueError(f"{ATTN_NAME} is for training passes (query and key lengths differ)")
    n_rep = query.shape[1] // key.shape[1]
    sdpa_kw: dict[str, Any] = {"scale": scaling, "dropout_p": dropout if module.training else 0.0}
    if n_rep > 1:
        if _GQA_BY_REPEAT:
            key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
        else:
            sdpa_kw["enable_gqa"] = True
    window = kwargs.get("sliding_window")
    segments = _row_segments(batch, q_len, kwargs)
    if window is not None and max(max(r, default=0) for r in segments) > window:
        raise ValueError(f"{ATTN_NAME} does not implement sliding windows (window {window})")

    if all(r == [q_len] for r in segments):  # one full-length sample per row: a single call
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, **sdpa_kw)
        return out.transpose(1, 2).contiguous(), None

    rows = []
    # split (not slicing) everywhere: its backward is one cat, not a zero-filled copy per piece
    for q_row, k_row, v_row, lens in zip(query.split(1), key.split(1), value.split(1), segments):
        lens = [n for n in lens if n > 0]
        pad = q_len - sum(lens)
        sizes = lens + [pad] if pad else lens
        pieces = zip(*(t.split(sizes, dim=2)[:len(lens)] for t in (q_row, k_row, v_row)))
        parts = [F.scaled_dot_product_attention(q, k, v, is_causal=True, **sdpa_kw)
                 for q, k, v in pieces]
        if pad:  # right padding: nothing to attend, zero output (its labels are ignored)
            parts.append(query.new_zeros(1, query.shape[1], pad, value.shape[-1]))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register ``longalign_sdpa`` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, packed_sdpa_forward)
    return ATTN_NAME


def flash_attn_available() -> bool:
    """True when flash-attention 2 can run: a CUDA device and a ``flash_attn`` that imports
    (a build for another CUDA or torch is installed but fails to import: then our SDPA runs)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        importlib.import_module("flash_attn")
    except Exception as exc:  # noqa: BLE001 (a broken binary raises all sorts of errors)
        log.warning("flash_attn is installed but does not import (%s); using %s", exc, ATTN_NAME)
        return False
    return True


def select_attention() -> str:
    """The attention implementation for training: flash_attention_2 on CUDA when installed,
    else our per-sample SDPA (registered on the way)."""
    if flash_attn_available():
        return "flash_attention_2"
    return register()


def _is_packed(position_ids: torch.Tensor | None) -> bool:
    if position_ids is None or position_ids.shape[-1] < 2:
        return False
    pos = position_ids.reshape(-1, position_ids.shape[-1])
    return bool((pos[:, 1:] != pos[:, :-1] + 1).any())


def check_inputs(attn_implementation: str | None, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor | None) -> None:
    """Raise on inputs that silently break sample isolation.

    - any 2-D attention mask together with packed ``position_ids``: transformers then stops
      treating the restarts as sample boundaries, and samples attend to each other;
    - any attention mask with ``longalign_sdpa``: transformers drops it before attention runs.
    """
    if attention_mask is None:
        return
    if _is_packed(position_ids):
        kind = "an all-ones" if bool(attention_mask.all()) else "a"
        raise ValueError(f"{kind} attention_mask was passed with packed position_ids: samples "
                         "would attend to each other; pass attention_mask=None")
    if attn_implementation == ATTN_NAME:
        raise ValueError(f"{ATTN_NAME} ignores attention_mask; give sample lengths instead")


def install_input_guard(model: torch.nn.Module) -> Any:
    """Make ``model(...)`` raise on inputs :func:`check_inputs` rejects; returns the hook handle."""

    def hook(mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        impl = getattr(getattr(mod, "config", None), "_attn_implementation", None)
        check_inputs(impl, mask, kwargs.get("position_ids"))

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def prepare_for_packed_training(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off the KV cache (its presence disables packed-row detection) and guard the inputs."""
    model.config.use_cache = False
    install_input_guard(model)
    return model
