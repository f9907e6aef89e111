"""Teachers: whatever writes questions and answers, behind one small batched interface.

A teacher takes a list of chats (each a list of ``{"role", "content"}`` messages) and returns one
Completion (``longalign.endpoints.Reply``) per chat, in order. Batching is the teacher's business:
the local teacher pads and runs several prompts per ``generate`` call; the API teacher
(``openai_teacher``, over the shared endpoint client) sends them concurrently. Each finished reply
is also handed to an optional ``on_result(index, completion)`` callback as soon as it exists, which
is how the request journal records it durably. A teacher also knows (or estimates) its own
tokenizer, so it middle-truncates documents that do not fit its context window.
"""

from __future__ import annotations

import time
from typing import Sequence

from longalign.errors import UserError
from longalign.generation.interface import TRUNCATION_MARK, Chat, Completion, OnResult, Teacher
from longalign.progress import track

def middle_truncate_offsets(text: str, offsets: Sequence[tuple[int, int]], max_tokens: int) -> tuple[str, bool]:
    """Keep the first and last ``max_tokens // 2`` tokens (given as character offsets) of ``text``."""
    if len(offsets) <= max_tokens:
        return text, False
    head = max_tokens // 2
    tail = max_tokens - head
    return text[: offsets[head - 1][1]] + TRUNCATION_MARK + text[offsets[len(offsets) - tail][0]:], True


class LocalTeacher:
    """A transformers causal LM, greedy decoding, batched with left padding."""

    def __init__(self, spec: str, *, batch_size: int = 8, batch_tokens: int = 16384,
                 cpu_bf16: bool = False):
        import torch

        from longalign.models import load_model, load_tokenizer
        from longalign.precision import inference_placement

        start = time.monotonic()
        self.name = f"local:{spec}"
        # On the pod's GPU if it has one, else the CPU (bf16 where it computes bf16 natively).
        # Replies differ between precisions and devices, so each gets its own journal key.
        self.placement = inference_placement(cpu_bf16, "teacher")
        self.fingerprint = f"{self.name}|greedy" + (f"|{self.placement.tag}" if self.placement.tag else "")
        self.tokenizer = load_tokenizer(spec)
        self.tokenizer.padding_side = "left"
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"teacher model {spec!r} has no chat template; use an instruct model")
        self.model = load_model(spec, dtype=self.placement.dtype, device=self.placement.device,
                                gpus=self.placement.gpus)
        self.model.eval()
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self._torch = torch
        self.load_seconds = time.monotonic() - start
        self.batches = 0

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return list(backend.encode(text, add_special_tokens=False).offsets)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(enc["offset_mapping"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return middle_truncate_offsets(text, self._offsets(text), max_tokens)

    def window(self, configured: int) -> tuple[int, str]:
        """The configured window, capped by the model's positions (SmolLM2: 8,192)."""
        if self.max_positions and self.max_positions < configured:
            return self.max_positions, "model positions"
        return configured, "config"

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Prompt indices grouped longest first, within the batch size and padded-token budget."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches: list[list[int]] = []
        for i in order:
            current = batches[-1] if batches else None
            # Longest first: the first prompt of a batch sets its padded width.
            if (current is None or len(current) >= self.batch_size
                    or (len(current) + 1) * lengths[current[0]] > self.batch_tokens):
                batches.append([i])
            else:
                current.append(i)
        return batches

    def complete(self, prompts: Sequence[Chat], max_new_tokens: int, on_result: OnResult = None) -> list[Completion]:
        from transformers import GenerationConfig

        torch = self._torch
        texts = [self.tokenizer.apply_chat_template(list(chat), add_generation_prompt=True, tokenize=False)
                 for chat in prompts]
        encoded = [self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]
        lengths = [len(ids) for ids in encoded]
        if self.max_positions and max(lengths, default=0) + max_new_tokens > self.max_positions:
            raise UserError(
                f"teacher prompt of {max(lengths)} tokens + {max_new_tokens} new tokens exceeds the "
                f"teacher's {self.max_positions} positions: lower max_new_tokens"
            )
        eos = self.tokenizer.eos_token_id
        gen_config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
        results: list[Completion | None] = [None] * len(prompts)
        for batch in track(self._batches(lengths), "teacher batches"):
            enc = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]},
                                     return_tensors="pt").to(self.model.device)
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=gen_config)
            self.batches += 1
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            for i, ids in zip(batch, new):
                stop = ids.index(eos) if eos in ids else None
                kept = ids[:stop] if stop is not None else ids
                results[i] = Completion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    prompt_tokens=lengths[i],
                    completion_tokens=len(kept) + (stop is not None),
                    finish_reason="stop" if stop is not None else "length",
                )
                if on_result is not None:
                    on_result(i, results[i])
        return results  # type: ignore[return-value]


def window_of(teacher, configured: int) -> tuple[int, str]:
    """``teacher.window(configured)`` when the teacher has a limit of its own, else the config's."""
    return teacher.window(configured) if hasattr(teacher, "window") else (configured, "config")


def make_teacher(kind: str, model: str, api=None, *, cpu_bf16: bool = False) -> Teacher:
    """The teacher for ``config.teacher`` (``local`` or ``openai``); ``synthetic`` needs none."""
    if kind == "local":
        return LocalTeacher(model, cpu_bf16=cpu_bf16)
    if kind == "openai":
        from longalign.generation.openai_teacher import OpenAITeacher

        return OpenAITeacher(api, model)
    raise UserError(f"unknown teacher {kind!r}; choose local, openai or synthetic")
