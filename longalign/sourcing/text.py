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


class TokenCounter:
    """Counts tokens of many texts at once (no special tokens, no length warnings)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.backend is not None:
            encode = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
            return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]
