"""Plain-text documents -> token ids and labels for continued pre-training (packing format "text").

No chat template: a document is its text tokenised as the model sees plain text (the tokenizer's
own special tokens, e.g. a BOS, included) with the EOS token appended, so the model learns where
a document ends. Every token is a target except the first of each sample, which nothing in the
row may predict (the same rule as chat samples; ProLong's collator masks it the same way).

Documents longer than ``max_len``:
- ``split_long`` (default): cut into consecutive pieces of ``max_len`` tokens; each full piece
  fills a row of its own and the last, shorter piece is packed with other documents like any
  sample. Pieces are separate samples (``<id>#<k>``), so attention does not cross a cut.
- otherwise ``truncation="drop"`` skips the document (``too_long``) and ``"middle"`` keeps its
  first and last halves, with the first token after the cut not predicted across it.

A piece or document of one token carries no target and is skipped as ``no_targets``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from longalign.errors import UserError
from longalign.formats import IGNORE, Shards
from longalign.packing.encode import Encoded, Skipped

READ_BATCH = 64  # documents read (and tokenised in one call) at a time


class TextEncoder:
    """Turns plain-text documents into samples whose every token but the first is a target."""

    template: str | None = None  # no chat template (packing meta; the tokenizer keeps its own)
    template_name: str | None = None

    def __init__(self, tokenizer: Any, max_len: int, *, split_long: bool = True,
                 truncation: str = "drop") -> None:
        if truncation not in ("drop", "middle"):
            raise UserError(f"bad truncation {truncation!r}")
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.max_len = max_len
        self.split_long = split_long
        self.truncation = truncation

    def encode_stream(self, records: Iterable[tuple[str, Any]]) -> Iterator[Encoded | Skipped]:
        """Encode ``(id, text)`` records lazily, tokenising ``READ_BATCH`` at a time."""
        chunk: list[tuple[str, Any]] = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= READ_BATCH:
                yield from self._encode_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._encode_chunk(chunk)

    def _encode_chunk(self, chunk: list[tuple[str, Any]]) -> Iterator[Encoded | Skipped]:
        good = [(i, t) for i, t in chunk if isinstance(t, str) and t.strip()]
        ids = self.tokenizer([t for _, t in good], add_special_tokens=True)["input_ids"] if good else []
        encoded = dict(zip((i for i, _ in good), ids))
        for sample_id, text in chunk:
            if sample_id not in encoded:
                yield Skipped(sample_id, "empty_message", "the document has no text")
                continue
            tokens = list(encoded[sample_id])
            if self.eos is not None and (not tokens or tokens[-1] != self.eos):
                tokens.append(self.eos)
            yield from self.samples(sample_id, np.asarray(tokens, dtype=np.int32))

    def samples(self, sample_id: str, tokens: np.ndarray) -> Iterator[Encoded | Skipped]:
        """The samples of one tokenised document (one, or its pieces; see the module docstring)."""
        n = len(tokens)
        if n <= self.max_len:
            yield _sample(sample_id, tokens)
        elif self.split_long:
            for k, start in enumerate(range(0, n, self.max_len)):
                yield _sample(f"{sample_id}#{k}", tokens[start:start + self.max_len])
        elif self.truncation == "drop":
            yield Skipped(sample_id, "too_long", f"{n} tokens > max_len {self.max_len}")
        else:
            head = self.max_len // 2
            kept = np.concatenate([tokens[:head], tokens[n - (self.max_len - head):]])
            result = _sample(sample_id, kept, truncated=True)
            if isinstance(result, Encoded):
                result.labels[head] = IGNORE  # not predicted across the cut
            yield result


def _sample(sample_id: str, tokens: np.ndarray, truncated: bool = False) -> Encoded | Skipped:
    if len(tokens) < 2:
        return Skipped(sample_id, "no_targets", f"{len(tokens)} token(s): nothing to predict")
    labels = tokens.copy()
    labels[0] = IGNORE
    return Encoded(sample_id, tokens.copy(), labels, truncated)


def text_records(corpus: Shards, tally: Any,
                 rows: tuple[int, int] | None = None) -> Iterator[tuple[str, Any]]:
    """(id, text) of every corpus document (of input rows ``rows[0]`` to ``rows[1] - 1`` if
    given), streamed; rows without an id are counted and skipped."""
    n = rows[0] if rows else 0
    batches = (corpus.iter_range(*rows, READ_BATCH, ["id", "text"]) if rows
               else corpus.iter_batches(READ_BATCH, ["id", "text"]))
    for batch in batches:
        for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
            tally.samples_in += 1
            if doc_id:
                yield str(doc_id), text
            else:
                tally.skip(f"row {n}", "malformed", "missing id")
            n += 1
