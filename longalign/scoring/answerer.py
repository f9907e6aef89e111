"""Answer generation: the Answerer interface and the local transformers implementation.

An Answerer turns chat prompts into answer strings, in order. Anything with that one method can be
scored (an OpenAI-compatible client, an oracle in tests).
"""

from __future__ import annotations

import copy
import logging
from typing import Protocol, runtime_checkable

from longalign.progress import track
from longalign.scoring.chat import encode, middle_truncate

log = logging.getLogger("longalign")


@runtime_checkable
class Answerer(Protocol):
    """Answers a list of chats (each a list of ``{"role", "content"}`` messages), one string each.

    A chat may end with an ``assistant`` message: an answer prefix that the answer continues (the
    returned string is the continuation only). A remote answerer that cannot continue a message may
    send the chat without it; exact-match scoring does not depend on the prefix being echoed.

    Optionally, ``with_budget(n)`` returns an answerer allowed at least ``n`` new tokens (used for
    answers that cannot be short, such as UUIDs); without it every answer gets the default budget.
    ``with_generation(max_new_tokens, temperature[, seed])`` likewise sets the budget and sampling
    temperature (LongBench-Chat answers are sampled at 1.0 with up to 1,024 new tokens).
    """

    def answer(self, prompts: list[list[dict]]) -> list[str]:
        ...


class TransformersAnswerer:
    """Greedy local generation with a transformers causal LM.

    Prompts go through the tokenizer's chat template (a final assistant message is continued); a
    prompt longer than the model's context (``max_position_embeddings - max_new_tokens``) is
    middle-truncated (first and last halves kept).

    Two schedules, same answers up to float rounding:
    - ``prefix_cache=True`` (default, best on CPU where prefill is compute-bound): prompts are
      prefilled one by one in token order, each starting from the KV cache of the prefix it shares
      with the previous prompt (a shared opening such as the same haystack up to the first needle is
      computed once; ``reused_tokens`` counts the prefill tokens saved); then up to ``max_batch``
      prompts (at most ``batch_tokens`` prompt tokens) decode together, their caches left-padded.
    - ``prefix_cache=False``: ``model.generate`` on prompts sorted by length, in left-padded batches
      of at most ``batch_tokens`` padded tokens and ``max_batch`` prompts.

    ``truncated`` and ``prompt_tokens`` record what the last ``answer`` call actually fed the model.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int, *, prefix_cache: bool = True,
                 batch_tokens: int = 16384, max_batch: int = 8, context: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        # cutting a sliding-window cache back to a prefix is not exact: use plain generate there
        self.prefix_cache = prefix_cache and not getattr(model.config, "sliding_window", None)
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.window = context or getattr(model.config, "max_position_embeddings", None) or 2048
        self.limit = max(16, self.window - max_new_tokens)
        self.truncated = 0
        self.reused_tokens = 0
        self.prompt_tokens: list[int] = []
        self.temperature = 0.0  # 0: greedy; > 0: sampling (plain batched generate, seeded)
        self.seed = 0
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def with_budget(self, max_new_tokens: int) -> "TransformersAnswerer":
        """The same model with at least ``max_new_tokens`` new tokens per answer."""
        other = copy.copy(self)
        other.max_new_tokens = max(self.max_new_tokens, max_new_tokens)
        other.limit = max(16, self.window - other.max_new_tokens)
        return other

    def with_generation(self, max_new_tokens: int, temperature: float, seed: int = 0) -> "TransformersAnswerer":
        """The same model with this budget, sampling at ``temperature`` when it is > 0, with ``seed``
        set before every prompt."""
        other = self.with_budget(max_new_tokens)
        other.max_new_tokens = max_new_tokens
        other.limit = max(16, self.window - max_new_tokens)
        other.temperature, other.seed = temperature, seed
        return other

    def answer(self, prompts: list[list[dict]]) -> list[str]:
        """Greedy answers (special tokens and surrounding whitespace removed), in prompt order."""
        ids = [encode(self.tokenizer, p) for p in prompts]
        self.truncated = sum(len(x) > self.limit for x in ids)
        if self.truncated:
            log.warning("%d prompt(s) longer than the model's %d-token limit were middle-truncated",
                        self.truncated, self.limit)
        ids = [middle_truncate(x, self.limit) for x in ids]
        self.prompt_tokens = [len(x) for x in ids]
        self.reused_tokens = 0
        if self.temperature > 0:
            return self._answer_seeded(ids)
        if self.prefix_cache:
            return self._answer_sequential(ids)
        return self._answer_batched(ids)

    def _generate(self, input_ids, mask, cache=None):
        import torch

        with torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                past_key_values=cache,
                max_new_tokens=self.max_new_tokens, pad_token_id=self.pad,
                **({"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                   if self.temperature > 0 else {"do_sample": False}),
                eos_token_id=self.tokenizer.eos_token_id,
            )

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        return {i for i in ids if i is not None}

    def _prefill(self, x: list[int], prev: list[int], prev_kv) -> tuple[list, int, int]:
        """KV cache of prompt ``x`` (reusing the prefix it shares with ``prev``) and its first token."""
        import torch
        from transformers import DynamicCache

        keep = 0
        for a, b in zip(prev, x[:-1]):  # at least one prompt token must be fed
            if a != b:
                break
            keep += 1
        data = [(k[:, :, :keep], v[:, :, :keep]) for k, v in prev_kv] if keep else None
        cache = DynamicCache(data, config=self.model.config)
        with torch.inference_mode():
            device = self.model.device
            out = self.model(input_ids=torch.tensor([x[keep:]], device=device),
                             position_ids=torch.arange(keep, len(x), device=device).unsqueeze(0),
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return kv, int(out.logits[0, -1].argmax()), keep

    def _decode_batch(self, rows: list[tuple[list, int, int]]) -> list[list[int]]:
        """Greedy decoding of several prefilled prompts at once (caches left-padded to one width)."""
        import torch
        from transformers import DynamicCache

        eos = self._eos_ids()
        lengths = [kv[0][0].shape[2] for kv, _, _ in rows]
        width = max(lengths)
        layers = []
        for layer in range(len(rows[0][0])):
            keys, values = [], []
            for (kv, _, _), n in zip(rows, lengths):
                k, v = kv[layer]
                pad = (0, 0, width - n, 0)  # left-pad the sequence dimension
                keys.append(torch.nn.functional.pad(k, pad))
                values.append(torch.nn.functional.pad(v, pad))
            layers.append((torch.cat(keys), torch.cat(values)))
        cache = DynamicCache(layers, config=self.model.config)
        device = self.model.device
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for r, n in enumerate(lengths):
            mask[r, width - n:] = 1
        tokens = [[first] for _, first, _ in rows]
        done = [first in eos for _, first, _ in rows]
        positions = torch.tensor(lengths, device=device).unsqueeze(1)
        for _ in range(self.max_new_tokens - 1):
            if all(done):
                break
            last = torch.tensor([[t[-1]] for t in tokens], device=device)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long, device=device)],
                             dim=1)
            with torch.inference_mode():
                out = self.model(input_ids=last, attention_mask=mask, position_ids=positions,
                                 past_key_values=cache, use_cache=True)
            cache, positions = out.past_key_values, positions + 1
            for r, token in enumerate(out.logits[:, -1].argmax(-1).tolist()):
                if not done[r]:
                    tokens[r].append(token)
                    done[r] = token in eos
        return [[t for t in row if t not in eos] for row in tokens]

    def _chunks(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        chunks: list[list[int]] = []
        for i in order:
            if chunks and len(chunks[-1]) < self.max_batch and \
                    sum(lengths[j] for j in chunks[-1]) + lengths[i] <= self.batch_tokens:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        return chunks

    def _answer_sequential(self, ids: list[list[int]]) -> list[str]:
        answers = [""] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: ids[i])  # neighbours share the longest prefixes
        prev: list[int] = []
        prev_kv: list = []
        for chunk in track(self._chunks(order, self.prompt_tokens), "answering"):
            rows = []
            for i in chunk:
                prev_kv, first, keep = self._prefill(ids[i], prev, prev_kv)
                prev = ids[i]
                self.reused_tokens += keep
                rows.append((prev_kv, first, keep))
            for i, new in zip(chunk, self._decode_batch(rows)):
                answers[i] = self._decode(new)
        return answers

    def _answer_seeded(self, ids: list[list[int]]) -> list[str]:
        """Sampled answers, one prompt at a time with the seed set before each (so an answer does not
        depend on which other prompts share its batch: LongBench-Chat's fixed seed per question)."""
        import torch

        answers = []
        for x in track(ids, "answering"):
            torch.manual_seed(self.seed)
            out = self._generate(torch.tensor([x]), torch.ones((1, len(x)), dtype=torch.long))
            answers.append(self._decode(out[0, len(x):]))
        return answers

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        batches: list[list[int]] = []
        for i in order:
            if batches:
                last = batches[-1]
                width = max(lengths[j] for j in (*last, i))
                if len(last) < self.max_batch and width * (len(last) + 1) <= self.batch_tokens:
                    last.append(i)
                    continue
            batches.append([i])
        return batches

    def _answer_batched(self, ids: list[list[int]]) -> list[str]:
        import torch

        answers = [""] * len(ids)
        for batch in track(self._batches(self.prompt_tokens), "answering"):
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every row ends where generation starts
                input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
                mask[row, width - len(ids[i]):] = 1
            out = self._generate(input_ids, mask)
            for row, i in enumerate(batch):
                answers[i] = self._decode(out[row, width:])
        return answers
