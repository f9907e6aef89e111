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


def truncate_messages(tokenizer, messages: list[dict], limit: int) -> tuple[list[dict], bool]:
    """``messages`` whose rendered prompt fits ``limit`` tokens, by cutting the middle of the longest
    user message (its first and last halves in tokens are kept, joined directly as the LongBench
    reference does). For answerers that send text, not token ids (an OpenAI-compatible endpoint).

    Returns the messages (unchanged when they fit) and whether anything was cut. Raises ValueError
    when even an empty user message would not fit.
    """
    total = count_tokens(tokenizer, messages)
    if total <= limit:
        return messages, False
    users = [k for k, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("no user message to truncate")
    at = max(users, key=lambda k: len(messages[k]["content"]))
    text = messages[at]["content"]
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    keep = len(offsets) - (total - limit)
    while True:
        if keep < 2:
            raise ValueError(f"the prompt does not fit {limit} tokens even with its longest message cut")
        head = keep // 2
        tail = keep - head
        cut = text[: offsets[head - 1][1]] + text[offsets[len(offsets) - tail][0]:]
        out = [dict(m, content=cut) if k == at else m for k, m in enumerate(messages)]
        over = count_tokens(tokenizer, out) - limit
        if over <= 0:
            return out, True
        keep -= over  # the seam tokenised differently: shrink by the excess and try again
