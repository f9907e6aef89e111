"""Near-duplicate removal with MinHash LSH (datasketch).

A document's shingles are its word n-grams (lower-cased words; ``ngram`` words each, default 5),
hashed to 64 bits with numpy; one shingle in ``SAMPLE`` (chosen by hash value, so the same in
every document) is summarised by a ``num_perm``-permutation MinHash. Only the first ``MAX_CHARS``
characters of a document are compared. An LSH index tuned for the Jaccard
``threshold`` finds earlier documents whose estimated similarity exceeds it; the first document
of a near-duplicate cluster is kept, the later ones are rejected as ``near_duplicate``.

Memory: the index holds the LSH band keys of every document that passed (a few KB each), not
the texts. A document is entered into the index when it is first seen, as with exact
deduplication, so the first occurrence wins whether or not it is kept later.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for combining word hashes
CHUNK = 8192  # shingles per MinHash update (bounds the permutation matrix to CHUNK x num_perm)
WORD_BYTES = 32
MAX_CHARS = 4_000_000  # only the first characters of a huge document are compared
SAMPLE = 4  # one shingle in SAMPLE (by hash value) enters the MinHash


def _identity(value):
    return int(value)


def word_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the words of ``text`` (lower-cased runs of ASCII letters, digits and ``_``
    and of non-ASCII characters), computed with numpy on the UTF-8 bytes. A word longer than
    ``WORD_BYTES`` bytes is hashed by its first ``WORD_BYTES`` bytes and its length."""
    data = np.frombuffer(text[:MAX_CHARS].lower().encode("utf-8", "replace"), dtype=np.uint8)
    is_word = (data >= 0x80) | ((data >= 48) & (data <= 57)) | ((data >= 97) & (data <= 122)) | (data == 95)
    edges = np.diff(np.concatenate(([0], is_word.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    acc = lengths.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(min(WORD_BYTES, int(lengths.max(initial=0)))):
            live = lengths > j
            acc[live] = acc[live] * _MULT + data[starts[live] + j].astype(np.uint64) + np.uint64(1)
    return acc


def shingle_hashes(text: str, ngram: int, sample: int = SAMPLE) -> np.ndarray:
    """Distinct 64-bit hashes of the word ``ngram``-grams of ``text``, keeping only those in the
    lowest ``1/sample`` of the hash range (the same shingles in every document, so the Jaccard
    similarity of the kept sets estimates that of the full sets; Broder's mod-m sampling)."""
    h = word_hashes(text)
    if not len(h):
        return h
    n = min(ngram, len(h))
    width = len(h) - n + 1
    acc = np.zeros(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc = acc * _MULT + h[j:j + width] + np.uint64(j + 1)
        acc ^= acc >> np.uint64(29)
        acc *= _MULT
        acc ^= acc >> np.uint64(32)
    if sample > 1:
        acc = acc[acc < np.uint64((2**64 - 1) // sample)]
    return np.unique(acc)


class NearDuplicates:
    """The LSH index of the documents seen so far."""

    def __init__(self, threshold: float, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.count = 0

    def signature(self, text: str) -> MinHash:
        sig = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=_identity, scheme="affine64")
        hashes = shingle_hashes(text, self.ngram)
        for start in range(0, len(hashes), CHUNK):
            sig.update_batch(hashes[start:start + CHUNK])
        return sig

    def check_and_add(self, text: str, key: str,
                      hashvalues: Optional[np.ndarray] = None) -> Optional[str]:
        """The key of an earlier near-duplicate of ``text``, or None (then ``text`` is indexed).
        ``hashvalues``: the signature's hash values when they were computed elsewhere (by a map
        worker, with the same settings)."""
        sig = (self.signature(text) if hashvalues is None
               else LeanMinHash(seed=self.seed, hashvalues=hashvalues, scheme="affine64"))
        matches = self.lsh.query(sig)
        if matches:
            return min(matches)
        self.lsh.insert(key, sig, check_duplication=False)
        self.count += 1
        return None
