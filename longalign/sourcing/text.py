"""Text checks and token counting for the sourcing stage."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Union

# Control characters other than tab / newline / carriage return / form feed, DEL, C1 controls,
# and U+FFFD (what a lossy decoder leaves behind).
_NON_PRINTABLE = re.compile("[\x01-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")
BINARY_FRACTION = 0.3  # more than this share of non-printable characters: binary
SAMPLE_CHARS = 65536  # the share is measured on the first characters only


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_text(data: Union[str, bytes]) -> tuple[str | None, str, str]:
    """Decode, NFC-normalise and check raw data.

    Returns ``(text, "", "")`` for usable text, else ``(None, reason, detail)`` with reason one of
    ``binary`` (NUL bytes or mostly non-printable), ``undecodable`` (not UTF-8) or ``empty``.
    A leading byte-order mark is dropped.
    """
    if isinstance(data, bytes):
        if b"\x00" in data:
            return None, "binary", "NUL byte"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, "undecodable", f"{exc.reason} at byte {exc.start}"
    else:
        text = data
        if "\x00" in text:
            return None, "binary", "NUL character"
    text = unicodedata.normalize("NFC", text.removeprefix("\ufeff"))
    if not text.strip():
        return None, "empty", "no non-whitespace text"
    sample = text[:SAMPLE_CHARS]
    bad = len(_NON_PRINTABLE.findall(sample))
    if bad > BINARY_FRACTION * len(sample):
        return None, "binary", f"{bad}/{len(sample)} non-printable characters"
    return text, "", ""


_LINE_START = re.compile(r"\n(?=\S)")
CHUNK_CHARS = 1_000_000  # characters handed to the tokenizer at once (bounds its memory)


def chunks(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters, each cut just before a newline
    that is followed by a non-space character (the next piece starts with that newline)."""
    if len(text) <= size:
        return [text]
    out, start = [], 0
    while len(text) - start > size:
        cut = None
        for match in _LINE_START.finditer(text, start + size // 2, start + size):
            cut = match.start()
        cut = cut if cut and cut > start else start + size  # no line boundary: cut anywhere
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


class TokenCounter:
    """Counts tokens of many texts (no special tokens, no length warnings) with bounded memory.

    Texts go to the tokenizer in sub-batches of about ``chunk_chars`` characters; a longer text is
    counted as the sum of its ``chunks``. Byte-level BPE tokenizers with GPT-2 style
    pre-tokenisation (SmolLM2's) make a lone newline before a non-space its own pre-token, so the
    sum is exact for them (a test checks it); for other tokenizers it may differ by about one
    token per chunk. Such texts (over a
    million characters) are far above any ``max_tokens`` and are split, and every piece is counted
    exactly.
    """

    def __init__(self, tokenizer, chunk_chars: int = CHUNK_CHARS) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.chunk_chars = chunk_chars

    def _encode(self, texts: list[str]) -> list[int]:
        if self.backend is not None:
            encode = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
            return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def count(self, texts: list[str]) -> list[int]:
        counts = [0] * len(texts)
        batch: list[str] = []
        owners: list[int] = []
        held = 0

        def run() -> None:
            nonlocal batch, owners, held
            if batch:
                for owner, n in zip(owners, self._encode(batch)):
                    counts[owner] += n
            batch, owners, held = [], [], 0

        for i, text in enumerate(texts):
            for piece in chunks(text, self.chunk_chars):
                if held and held + len(piece) > self.chunk_chars:
                    run()
                batch.append(piece)
                owners.append(i)
                held += len(piece)
        run()
        return counts
