"""Where each token starts, without asking the tokenizer for offsets (byte-level BPE only).

Labelling needs, for a few character positions per chat (the target spans' ends, the last
turn's header), the first token that starts at or after them. The Rust tokenizer can return
every token's character offsets, but computing them is about 15% of its encode time (it maps
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


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the character a byte-level vocabulary uses for
    each byte value -> that byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


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


class ByteStarts:
    """Token start bytes from token ids for one byte-level BPE tokenizer (module docstring)."""

    def __init__(self, flat: np.ndarray, begin: np.ndarray, length: np.ndarray) -> None:
        self._flat, self._begin, self._length = flat, begin, length  # token id -> its bytes

    @classmethod
    def build(cls, backend: Any) -> ByteStarts | None:
        """The table for the Rust tokenizer ``backend``, or None when its tokens do not stand
        for fixed bytes (then offsets are needed)."""
        try:
            spec = json.loads(backend.to_str())
        except Exception:  # noqa: BLE001 (a tokenizer that cannot describe itself: use offsets)
            return None
        model = spec.get("model") or {}
        if (spec.get("normalizer") is not None or model.get("type") != "BPE"
                or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
                or model.get("byte_fallback") or not _has_byte_level(spec.get("pre_tokenizer"))):
            return None
        added = {}
        for token in spec.get("added_tokens") or []:
            if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
                return None  # it takes whitespace around it: not its own bytes
            added[int(token["id"])] = token["content"].encode()
        decoder = _byte_decoder()
        vocab = model.get("vocab") or {}
        size = max([*vocab.values(), *added, -1]) + 1
        pieces: list[bytes] = [b""] * size
        try:
            for text, i in vocab.items():
                pieces[i] = bytes(decoder[c] for c in text)
        except KeyError:  # a character outside the byte alphabet: not a byte-level vocabulary
            return None
        for i, content in added.items():
            pieces[i] = content
        length = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=size)
        begin = np.zeros(size, dtype=np.int64)
        np.cumsum(length[:-1], out=begin[1:])
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
