"""Turning chat messages into the exact token ids a model sees, and middle truncation."""

from __future__ import annotations

from typing import Sequence


def render(tokenizer, messages: list[dict]) -> str:
    """The prompt text for ``messages``: the tokenizer's chat template with the generation prompt.

    A final ``assistant`` message is an answer prefix: the prompt ends inside it, and the model
    continues it (RULER-style "The special magic number for X is"). A tokenizer without a chat
    template (a plain base model) gets a minimal ``User:/Assistant:`` form.
    """
    prefix = bool(messages) and messages[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefix,
                                             continue_final_message=prefix)
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + ("" if prefix else "\n\nAssistant:")


def encode(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the rendered prompt (the template carries its own special tokens)."""
    text = render(tokenizer, messages)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return list(ids)


def count_tokens(tokenizer, messages: list[dict]) -> int:
    """Length in tokens of the prompt built from ``messages``."""
    return len(encode(tokenizer, messages))


def middle_truncate(ids: Sequence[int], limit: int) -> list[int]:
    """Keep the first and last halves of ``ids`` when it is longer than ``limit`` (LongBench style).

    The head gets ``limit // 2`` tokens and the tail the rest, so the chat template's opening and the
    question plus generation prompt at the end survive.
    """
    ids = list(ids)
    if limit <= 0:
        raise ValueError(f"truncation limit must be positive, got {limit}")
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head):]
