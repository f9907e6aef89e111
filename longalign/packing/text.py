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
from longalign.packing.encode import (TOKENIZE_CHARS, Encoded, RustBackend, Skipped,
                                      tokenise_overlapped)

READ_BATCH = 64  # documents read from a Parquet shard at a time


class TextEncoder:
    """Turns plain-text documents into samples whose every token but the first is a target."""

    template: str | None = None  # no chat template (packing meta; the tokenizer keeps its own)
    template_name: str | None = None

    def __init__(self, tokenizer: Any, max_len: int, *, split_long: bool = True,
                 truncation: str = "drop") -> None:
        if truncation not in ("drop", "middle"):
            raise UserError(f"bad truncation {truncation!r}")
        self.tokenizer = tokenizer
        self._rust = RustBackend(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.max_len = max_len
        self.split_long = split_long
        self.truncation = truncation

    def encode_stream(self, records: Iterable[tuple[str, Any]], *,
                      chunk_chars: int | None = None) -> Iterator[Encoded | Skipped]:
        """Encode ``(id, text)`` records lazily, in order: chunks of about ``chunk_chars``
        characters (default ``TOKENIZE_CHARS``) are tokenised by one batched call of the Rust
        tokenizer each, in a second thread while the next chunk is read
        (``longalign.packing.encode.tokenise_overlapped``)."""
        def encode(chunk: list[tuple[str, Any]]) -> list:
            texts = [t for _, t in chunk if _usable(t)]
            backend = self._rust.get()
            # no offsets needed: the fast call skips computing them (the same ids)
            call = getattr(backend, "encode_batch_fast", backend.encode_batch)
            return call(texts, add_special_tokens=True) if texts else []

        return tokenise_overlapped(_chunks(records, chunk_chars or TOKENIZE_CHARS), encode,
                                   self._finish_chunk)

    def _finish_chunk(self, chunk: list[tuple[str, Any]], encodings: list) -> Iterator[Encoded | Skipped]:
        encodings = iter(encodings)
        for sample_id, text in chunk:
            if not _usable(text):
                yield Skipped(sample_id, "empty_message", "the document has no text")
                continue
            tokens = np.asarray(next(encodings).ids, dtype=np.int32)
            if self.eos is not None and (not len(tokens) or tokens[-1] != self.eos):
                tokens = np.append(tokens, np.int32(self.eos))
            yield from self.samples(sample_id, tokens)

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


def _usable(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip())


def _chunks(records: Iterable[tuple[str, Any]], chunk_chars: int) -> Iterator[list]:
    chunk: list[tuple[str, Any]] = []
    chars = 0
    for record in records:
        chunk.append(record)
        chars += len(record[1]) if isinstance(record[1], str) else 0
        if chars >= chunk_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


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
