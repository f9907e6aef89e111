"""Chats -> token ids and labels with a chat template (the tokenizer's own or one named in
templates.py; llama2-inst is laid out there and labelled in ``_prepare_llama``).

How assistant tokens are found (the prefix method, which needs no ``{% generation %}`` support):
for assistant message ``i`` the template renders ``messages[:i]`` with the generation prompt
(ending right after the assistant header) and ``messages[:i+1]``; both must be prefixes of the
whole conversation's rendering, else the sample is skipped as ``template_mismatch``. The
characters between the two, with trailing whitespace removed, are the target span: the content
plus the end-of-turn token (``<|im_end|>`` in ChatML) but neither the role header nor the newline
after the end token. The whole conversation is then tokenised once, in batches, by the Rust
tokenizer, and a token is a target exactly when it *starts* inside a target span. Where tokens
start comes from the tokenizer's character offsets or, for byte-level BPE tokenizers (most of
today's models), from the tokens' own bytes, which lets the tokenizer skip computing offsets
(``longalign.packing.offsets``: the same starts, checked on every text). Finally the first
label of every sample is set to -100, so nothing is ever predicted across a sample boundary in a
packed row. Labels are aligned with ``input_ids`` (``labels[t]`` is token t
itself where it is a target); the shift happens in the loss.

Samples longer than ``max_len``:
- ``truncation="drop"``: skipped with reason ``too_long``.
- ``truncation="middle"``: the tail is everything from the start of the last assistant turn's
  header (``<|im_start|>assistant``) to the end; it must fit in ``max_len`` (else ``too_long``).
  The kept head is the first ``h = min(max_len // 2, max_len - len(tail))`` tokens and the kept
  tail the last ``max_len - h`` tokens, so the sample is exactly ``max_len`` tokens long, every
  target of the last assistant turn survives, and the cut usually falls inside the long first
  user message (a document). The label of the first token after the cut is set to -100.

Skip reasons (stats keys): ``malformed`` (messages not a non-empty list of role/content),
``bad_role`` (not system/user/assistant), ``empty_message`` (empty or blank content),
``no_assistant``, ``assistant_first`` (a labelled assistant message opens the chat: there is no
prefix to render), ``template_error`` (the template raised), ``template_mismatch`` (prefix
renderings are not prefixes), ``too_long``, ``no_targets`` (no token carries a label).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from longalign.errors import UserError
from longalign.formats import IGNORE
from longalign.packing.offsets import ByteStarts, TokenStarts
from longalign.packing.templates import ChatRenderer, llama2_inst_parts, resolve_template

TOKENIZE_CHARS = 2_000_000  # characters of rendered chats per tokenizer call (bounds memory)
ROLES = ("system", "user", "assistant")
BYTE_MISSES = 8  # texts whose tokens did not tile their bytes before offsets are used for all

log = logging.getLogger("longalign")


class RustBackend:
    """The Rust tokenizer inside a transformers fast tokenizer, called directly: that skips
    transformers' per-token Python conversion (about 20% of the tokenising time). :meth:`get`
    returns the tokenizer's own while it has no truncation or padding set and encodes special
    tokens as such (the usual state; checked at every use, since calls through transformers set
    them), else a private copy in that state (copying costs about 0.1 s, which a run that does
    not need it does not pay)."""

    def __init__(self, tokenizer: Any) -> None:
        if getattr(tokenizer, "backend_tokenizer", None) is None:
            raise UserError("packing needs a fast (Rust) tokenizer with offset mapping")
        self.tokenizer = tokenizer
        self._private: Any = None

    def get(self) -> Any:
        own = self.tokenizer.backend_tokenizer
        if own.truncation is None and own.padding is None and not own.encode_special_tokens:
            return own
        if self._private is None:
            from tokenizers import Tokenizer

            self._private = Tokenizer.from_str(own.to_str())
            self._private.no_truncation()
            self._private.no_padding()
            self._private.encode_special_tokens = False
        return self._private


def tokenise_overlapped(chunks: Iterable[Any], encode: Callable[[Any], Any],
                        finish: Callable[[Any, Any], Iterator[Any]]) -> Iterator[Any]:
    """``finish(chunk, encode(chunk))`` for each chunk, in order, with ``encode`` (a batched call
    of the Rust tokenizer, which spreads over its thread pool and releases the GIL) running in a
    second thread: the next chunk is read and prepared, and the previous one finished, while a
    chunk is being tokenised. At most two chunks are in memory at once."""
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
        running: tuple[Any, Future] | None = None
        for chunk in chunks:
            future = pool.submit(encode, chunk)
            if running is not None:
                yield from finish(running[0], running[1].result())
            running = (chunk, future)
        if running is not None:
            yield from finish(running[0], running[1].result())


@dataclass
class Encoded:
    """One tokenised sample (int32 arrays of equal length)."""

    id: str
    input_ids: np.ndarray
    labels: np.ndarray
    truncated: bool = False

    @property
    def n_targets(self) -> int:  # derived each time: callers may still edit the labels
        return int(np.count_nonzero(self.labels != IGNORE))


@dataclass
class Skipped:
    """A sample that was not used, with its reason (a stats key) and a human detail."""

    id: str
    reason: str
    detail: str = ""


@dataclass
class _Prepared:
    id: str
    text: str
    spans: list[tuple[int, int]]  # target character spans
    last_header: int  # character where the last assistant turn's header starts
    eos_labels: tuple[int, ...] = ()  # characters whose token gets the label EOS (llama2-inst)


def check_messages(messages: Any) -> tuple[str, str] | None:
    """Validate one conversation; return (reason, detail) if it is unusable."""
    if not isinstance(messages, list) or not messages:
        return "malformed", "messages is not a non-empty list"
    has_assistant = False
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return "malformed", f"message {n} lacks role or content"
        role, content = m["role"], m["content"]
        if role not in ROLES:
            return "bad_role", f"message {n} has role {role!r}"
        if not isinstance(content, str) or not content.strip():
            return "empty_message", f"message {n} ({role}) has empty content"
        has_assistant |= role == "assistant"
    if not has_assistant:
        return "no_assistant", "no assistant message"
    return None


class ChatEncoder:
    """Turns conversations into (input_ids, labels) with a chat template: ``chat_template``
    is ``tokenizer`` (the tokenizer's own), ``llama2-inst``, ``chatml`` or a Jinja string
    (longalign.packing.templates); :attr:`template` is the Jinja form of it. ``byte_starts=False``
    makes it use the tokenizer's character offsets even where token bytes would do (tests
    compare the two)."""

    def __init__(self, tokenizer: Any, max_len: int, truncation: str = "drop",
                 label_turns: str = "all", chat_template: str = "tokenizer",
                 byte_starts: bool = True) -> None:
        self._rust = RustBackend(tokenizer)
        self.template = resolve_template(chat_template, tokenizer)
        self.template_name = chat_template if chat_template in ("tokenizer", "llama2-inst",
                                                                "chatml") else "jinja"
        self._llama = chat_template == "llama2-inst"
        if truncation not in ("drop", "middle") or label_turns not in ("all", "last"):
            raise UserError(f"bad truncation {truncation!r} or label_turns {label_turns!r}")
        self.tokenizer = tokenizer
        self._renderer = None if self._llama else ChatRenderer(tokenizer, self.template)
        # token starts from token bytes where the tokenizer allows it (offsets.py), so the
        # tokenizer can skip computing offsets (encode_batch_fast); the table is built at the
        # first encode (a join that only reads the template does not pay for it)
        self._bytes: ByteStarts | None = None
        self._bytes_wanted = byte_starts and hasattr(tokenizer.backend_tokenizer,
                                                     "encode_batch_fast")
        self.byte_misses = 0
        self.max_len = max_len
        self.truncation = truncation
        self.label_turns = label_turns

    @property
    def backend(self) -> Any:
        """The Rust tokenizer that encodes the rendered chats (:class:`RustBackend`)."""
        return self._rust.get()

    def _render(self, messages: list[dict], generation: bool = False,
                prefixes: list[int] | None = None) -> Any:
        """The rendering of ``messages``, or with ``prefixes`` the list of the renderings of
        ``messages[:k]`` for each ``k`` (one batched call)."""
        if prefixes is None:
            return self._renderer([messages], generation)[0]
        return self._renderer([messages[:k] for k in prefixes], generation)

    def _prerender(self, messages: list[dict], turns: list[int]) -> dict[tuple[int, bool], str]:
        """Every rendering ``_prepare`` needs, ``{(k, generation): text of messages[:k]}``, in
        two batched calls (one per value of the generation prompt) instead of one call each:
        the whole chat, each labelled turn's prefix with and without its answer, and the prefix
        before the last turn (the last turn's "with answer" prefix is the whole chat). Empty
        when the template raises: ``_prepare`` then renders one prefix at a time, so the first
        failure is the one reported."""
        plain = sorted({len(messages), turns[-1], *(i + 1 for i in turns)})
        try:
            texts = self._render(messages, prefixes=plain)
            heads = self._render(messages, generation=True, prefixes=turns)
        except Exception:  # reported by the one-at-a-time renders
            return {}
        return {**{(k, False): t for k, t in zip(plain, texts)},
                **{(k, True): t for k, t in zip(turns, heads)}}

    def _prepare_llama(self, sample_id: str, messages: list[dict]) -> _Prepared | Skipped:
        try:
            parts = llama2_inst_parts(messages, self.tokenizer.bos_token,
                                      self.tokenizer.eos_token)
        except ValueError as exc:
            return Skipped(sample_id, "template_error", str(exc))
        answers = [k for k, p in enumerate(parts) if p.kind == "answer"]
        labelled = set(answers[-1:] if self.label_turns == "last" else answers)
        text, spans, eos_labels, last_header = "", [], [], 0
        for k, part in enumerate(parts):
            start = len(text)
            text += part.text
            if k == answers[-1] - 1:  # the "assistant header" is the [/INST] before the answer
                last_header = len(text) - len("[/INST]")
            if k in labelled:
                spans.append((start, len(text)))
                if part.eos_label:
                    eos_labels.append(len(text))
            elif part.kind == "eos" and answers[-1] in labelled:
                spans[-1] = (spans[-1][0], len(text))
        return _Prepared(sample_id, text, spans, last_header, tuple(eos_labels))

    def _prepare(self, sample_id: str, messages: list[dict]) -> _Prepared | Skipped:
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self._llama:
            return self._prepare_llama(sample_id, messages)
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.label_turns == "last":
            turns = turns[-1:]
        if turns[0] == 0:  # no prefix to render before it (transformers refuses an empty chat)
            return Skipped(sample_id, "assistant_first", "the chat starts with an assistant message")
        rendered = self._prerender(messages, turns)

        def render(k: int, generation: bool = False) -> str:  # messages[:k], rendered once
            if (k, generation) not in rendered:
                rendered[k, generation] = self._render(messages[:k], generation)
            return rendered[k, generation]

        try:
            text = render(len(messages))
            spans = []
            for i in turns:
                head = render(i, generation=True)
                upto = render(i + 1)
                if not (upto.startswith(head) and text.startswith(upto)):
                    return Skipped(sample_id, "template_mismatch",
                                   f"rendering of messages[:{i + 1}] is not a prefix of the chat")
                spans.append((len(head), len(upto.rstrip())))
            last_header = len(render(turns[-1]))
        except Exception as exc:  # jinja raises on conversations a template refuses
            return Skipped(sample_id, "template_error", f"{type(exc).__name__}: {exc}"[:200])
        return _Prepared(sample_id, text, spans, last_header)

    def encode_batch(self, ids: list[str], conversations: list[Any]) -> list[Encoded | Skipped]:
        """Encode several conversations, in order; bad ones come back as Skipped."""
        return list(self.encode_stream(zip(ids, conversations)))

    def encode_stream(self, records: Iterable[tuple[str, Any]], *,
                      chunk_chars: int | None = None) -> Iterator[Encoded | Skipped]:
        """Encode ``(id, messages)`` records lazily, yielding one result per record, in order.

        Records are rendered with the chat template and grouped into chunks of about
        ``chunk_chars`` characters; each chunk is tokenised by one batched call of the Rust
        tokenizer, which spreads it over all cores (its thread pool; ``RAYON_NUM_THREADS`` caps it,
        ``TOKENIZERS_PARALLELISM=false`` makes it serial) and releases the GIL, so the next chunk
        is rendered, and the previous one labelled, while a chunk is being tokenised. At most two
        chunks are in memory at once. ``chunk_chars`` defaults to ``TOKENIZE_CHARS``."""
        if self._bytes_wanted:
            self._bytes_wanted = False
            self._bytes = ByteStarts.build(self.tokenizer.backend_tokenizer)

        def encode(chunk: list) -> tuple[bool, list]:
            texts = [p.text for p in chunk if isinstance(p, _Prepared)]
            if self._bytes is not None:  # (True, encodings without offsets)
                return True, self.backend.encode_batch_fast(texts, add_special_tokens=False)
            return False, self.backend.encode_batch(texts, add_special_tokens=False)

        return tokenise_overlapped(self._chunks(records, chunk_chars or TOKENIZE_CHARS), encode,
                                   self._finish_chunk)

    @property
    def byte_starts(self) -> bool:
        """Whether token starts come from token bytes (``longalign.packing.offsets``), so the
        tokenizer skips its offsets (known from the first encode on); False for tokenizers that
        are not byte-level BPE, with ``byte_starts=False``, and after ``BYTE_MISSES`` texts whose
        tokens did not tile their bytes."""
        return self._bytes is not None

    def _starts(self, p: _Prepared, enc: Any, fast: bool) -> tuple[np.ndarray, TokenStarts]:
        """The token ids of ``p`` and where its tokens start."""
        input_ids = np.asarray(enc.ids, dtype=np.int32)
        if not fast:
            return input_ids, TokenStarts(len(input_ids), enc=enc)
        if self._bytes is not None:
            starts = self._bytes.starts(p.text, input_ids)
            if starts is not None:
                return input_ids, TokenStarts(len(input_ids), text=p.text, byte_starts=starts)
            self.byte_misses += 1
            if self.byte_misses >= BYTE_MISSES:
                log.warning("packing: %d texts' tokens did not tile their bytes; the tokenizer's "
                            "offsets are used from here on", self.byte_misses)
                self._bytes = None
        enc = self.backend.encode(p.text, add_special_tokens=False)  # this text with offsets
        input_ids = np.asarray(enc.ids, dtype=np.int32)
        return input_ids, TokenStarts(len(input_ids), enc=enc)

    def _chunks(self, records: Iterable[tuple[str, Any]], chunk_chars: int) -> Iterator[list]:
        chunk: list[_Prepared | Skipped] = []
        chars = 0
        for sample_id, messages in records:
            bad = check_messages(messages)
            p = Skipped(sample_id, *bad) if bad else self._prepare(sample_id, messages)
            chunk.append(p)
            if isinstance(p, _Prepared):
                chars += len(p.text)
            if chars >= chunk_chars:
                yield chunk
                chunk, chars = [], 0
        if chunk:
            yield chunk

    def _finish_chunk(self, chunk: list, encoded: tuple[bool, list]) -> Iterator[Encoded | Skipped]:
        fast, encodings = encoded[0], iter(encoded[1])
        for p in chunk:
            yield self._finish(p, next(encodings), fast) if isinstance(p, _Prepared) else p

    def _finish(self, p: _Prepared, enc: Any, fast: bool = False) -> Encoded | Skipped:
        input_ids, starts = self._starts(p, enc, fast)
        n = len(input_ids)
        # A token is a target when it starts inside a target span. Token starts are
        # non-decreasing, so each span is one contiguous token range.
        labels = np.full(n, IGNORE, dtype=np.int32)
        for a, b in p.spans:
            lo, hi = starts.first_at(a), starts.first_at(b)
            labels[lo:hi] = input_ids[lo:hi]
        for pos in p.eos_labels:  # llama2-inst: the token after an earlier answer learns EOS
            t = starts.first_at(pos)
            if t < n:
                labels[t] = self.tokenizer.eos_token_id
        if n:
            labels[0] = IGNORE
        truncated = False
        if n > self.max_len:
            if self.truncation == "drop":
                return Skipped(p.id, "too_long", f"{n} tokens > max_len {self.max_len}")
            tail = n - starts.first_at(p.last_header)
            if tail > self.max_len:
                return Skipped(p.id, "too_long",
                               f"last assistant turn alone has {tail} tokens > max_len {self.max_len}")
            head = min(self.max_len // 2, self.max_len - tail)
            keep = np.r_[0:head, n - (self.max_len - head):n]
            input_ids, labels = input_ids[keep], labels[keep]
            labels[head] = IGNORE  # the first token after the cut is not predicted across it
            labels[0] = IGNORE
            truncated = True
        result = Encoded(p.id, input_ids, labels, truncated)
        if result.n_targets == 0:
            return Skipped(p.id, "no_targets", "no assistant token carries a label")
        return result

