"""Where each token starts, without asking the tokenizer for offsets (byte-level BPE only).

Labelling needs, for a few character positions per chat (the target spans' ends, the last
turn's header), the first token that starts at or after them. The Rust tokenizer can return
every token's character offsets, but computing them is 15-20% of its encode time (it maps
every byte of the text to its character through a hash map); its ``encode_batch_fast`` skips
that. For a byte-level BPE tokenizer (GPT-2's scheme: SmolLM2, Llama 3, Qwen, Mistral NeMo, ...)
with no normalizer, the tokens tile the UTF-8 bytes of the text exactly: each vocabulary entry
stands for fixed bytes (its characters through GPT-2's byte-to-unicode table; an added token for
its own UTF-8), so a token's start byte is the sum of the byte lengths of the tokens before it.

:class:`ByteStarts` is built only for such tokenizers (:meth:`ByteStarts.build` returns None
otherwise: a normalizer, another model or pre-tokenizer, a word prefix or suffix, an added
token that strips whitespace) and checks the tiling on every text it is given: the tokens'
bytes, laid end to end, must *equal* the text's bytes, else :meth:`ByteStarts.starts` returns
None and the caller encodes that text again with offsets. With the tiling exact, "the first
token starting at or after character c" is the first token starting at or after byte
``len(text[:c].encode())``, the same token the character offsets give (a token that starts
inside a multi-byte character starts after c exactly when that character does).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def _byte_chars() -> dict[int, int]:
    """A ``str.translate`` table from the characters of a byte-level vocabulary (GPT-2's
    byte-to-unicode table) to the bytes they stand for, as characters 0-255; any other
    character 0-255 maps above 255, so ``.encode("latin-1")`` of a translated string fails
    exactly when it holds a character outside that alphabet."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = b
        else:
            table[256 + extra] = b
            table.setdefault(b, 0x2603)  # a byte's own character is not in the alphabet
            extra += 1
    return table


def _has_byte_level(pre_tokenizer: dict | None) -> bool:
    """Whether the pre-tokenizer is ByteLevel without an added prefix space, alone or in a
    Sequence whose other members only split (they cannot change bytes)."""
    if not pre_tokenizer:
        return False
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel":
        return not pre_tokenizer.get("add_prefix_space", False)
    if kind == "Sequence":
        members = pre_tokenizer.get("pretokenizers") or []
        splitters = {"Split", "Digits", "Punctuation"}
        return (sum(1 for m in members if _has_byte_level(m)) == 1
                and all(m.get("type") in splitters or _has_byte_level(m) for m in members))
    return False


_BYTE_CHARS = _byte_chars()


class ByteStarts:
    """Token start bytes from token ids for one byte-level BPE tokenizer (module docstring)."""

    def __init__(self, flat: np.ndarray, begin: np.ndarray, length: np.ndarray) -> None:
        self._flat, self._begin, self._length = flat, begin, length  # token id -> its bytes

    @classmethod
    def build(cls, backend: Any) -> ByteStarts | None:
        """The table for the Rust tokenizer ``backend``, or None when its tokens do not stand
        for fixed bytes (then offsets are needed). About 0.1 s for a 50k vocabulary."""
        try:
            model = backend.model
            if (backend.normalizer is not None or type(model).__name__ != "BPE"
                    or model.continuing_subword_prefix or model.end_of_word_suffix
                    or model.byte_fallback or backend.pre_tokenizer is None
                    or not _has_byte_level(json.loads(backend.pre_tokenizer.__getstate__()))):
                return None
            vocab = backend.get_vocab(with_added_tokens=False)
            added = backend.get_added_tokens_decoder()
        except Exception:  # noqa: BLE001 (a tokenizer that cannot describe itself: use offsets)
            return None
        if any(t.lstrip or t.rstrip or t.single_word for t in added.values()):
            return None  # such a token takes whitespace around it: not only its own bytes
        size = max([*vocab.values(), *added, -1]) + 1
        texts = [""] * size
        for text, i in vocab.items():
            texts[i] = text
        for i in added:
            texts[i] = ""
        try:  # the vocabulary's bytes, end to end, in id order
            flat = "".join(texts).translate(_BYTE_CHARS).encode("latin-1")
        except UnicodeEncodeError:  # a character outside the byte alphabet: not byte-level
            return None
        length = np.fromiter(map(len, texts), dtype=np.int64, count=size)
        begin = np.zeros(size, dtype=np.int64)
        np.cumsum(length[:-1], out=begin[1:])
        pieces, at = [flat], len(flat)
        for i, token in added.items():  # an added token stands for its own UTF-8
            content = token.content.encode()
            begin[i], length[i] = at, len(content)
            pieces.append(content)
            at += len(content)
        return cls(np.frombuffer(b"".join(pieces), dtype=np.uint8), begin, length)

    def starts(self, text: str, ids: np.ndarray) -> np.ndarray | None:
        """Start byte of each token of ``ids`` (the encoding of ``text``), or None when the
        tokens' bytes are not exactly the text's bytes."""
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._length)):
            return None
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        length = self._length[ids]
        if int(length.sum()) != len(data) or (len(ids) and not length.all()):
            return None
        starts = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(length[:-1], out=starts[1:])
        # every byte of the text against the byte the tokens put there
        where = np.repeat(self._begin[ids] - starts, length) + np.arange(len(data))
        if not np.array_equal(self._flat[where], data):
            return None
        return starts


class TokenStarts:
    """"The first token starting at or after character c" for one encoded text, from the
    encoding's own character offsets or, where :class:`ByteStarts` applies, from start bytes."""

    def __init__(self, n: int, *, enc: Any = None, text: str = "",
                 byte_starts: np.ndarray | None = None) -> None:
        self.n, self._enc, self._text, self._bytes = n, enc, text, byte_starts
        self._ascii = text.isascii() if byte_starts is not None else False

    def first_at(self, pos: int) -> int:
        """Index of the first token that starts at or after character ``pos`` (``n`` if none)."""
        if self._bytes is not None:
            at = pos if self._ascii else len(self._text[:pos].encode())
            return int(np.searchsorted(self._bytes, at, side="left"))
        # Token starts are non-decreasing: binary search over the encoding's offsets
        # (converting every offset to Python would cost about 15% of the tokenising time).
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._enc.token_to_chars(mid)[0] < pos:
                lo = mid + 1
            else:
                hi = mid
        return lo
