"""Token starts from token bytes (byte-level BPE) against the tokenizer's own character offsets:
the same ids, labels, truncation and skips, and offsets wherever the bytes do not apply."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from longalign.models import load_tokenizer
from longalign.packing import offsets
from longalign.packing.encode import BYTE_MISSES, ChatEncoder, Encoded, Skipped
from longalign.packing.offsets import ByteStarts


def chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


# Texts where bytes and characters part ways: multi-byte letters, characters the vocabulary
# splits into byte tokens (CJK, emoji with joiners and skin tones, combining marks), whitespace
# runs and newlines at the span edges, and text that looks like the template's own markup.
CHATS = [
    chat(("user", "Read: the cat sat on the mat."), ("assistant", "On the mat.")),
    chat(("system", "Réponds en français, s'il te plaît."), ("user", "Où est le chat ? " * 40),
         ("assistant", "Sur le tapis — évidemment."), ("user", "Et après ?"),
         ("assistant", "Il dort. 😴")),
    chat(("user", "日本語の文書を読んでください。" * 30), ("assistant", "読みました。🧑🏽‍💻👩‍👩‍👧‍👦")),
    chat(("user", "  leading and trailing spaces  \n\n\t"), ("assistant", "\n  indented answer\n\n")),
    chat(("user", "e\u0301 a\u0308 Z\u0335\u0327 ﬁ ½ Ⅻ"), ("assistant", "<|im_end|> is only text here, "
                                                              "and so is <|im_start|>assistant")),
    chat(("user", "x" * 3000 + " the middle " + "y" * 3000), ("assistant", "short"),
         ("user", "again " * 200), ("assistant", "the last answer, which must survive the cut")),
]


def encode_both(tokenizer, **kwargs) -> tuple[list, list, ChatEncoder]:
    fast = ChatEncoder(tokenizer, **kwargs)
    slow = ChatEncoder(tokenizer, **kwargs, byte_starts=False)  # the tokenizer's offsets
    ids = [f"c{k}" for k in range(len(CHATS))]
    results = fast.encode_batch(ids, CHATS), slow.encode_batch(ids, CHATS), fast
    assert fast.byte_starts and not slow.byte_starts
    return results


def same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        if isinstance(x, Encoded):
            assert x.id == y.id and x.truncated == y.truncated
            np.testing.assert_array_equal(x.input_ids, y.input_ids)
            np.testing.assert_array_equal(x.labels, y.labels)
        else:
            assert (x.id, x.reason, x.detail) == (y.id, y.reason, y.detail)


@pytest.mark.parametrize("max_len,truncation,label_turns", [
    (1 << 16, "drop", "all"), (1 << 16, "middle", "last"), (300, "middle", "all"),
    (300, "drop", "all")])
def test_byte_starts_label_exactly_as_character_offsets(tiny_model, max_len, truncation,
                                                         label_turns):
    tokenizer = load_tokenizer(tiny_model)
    fast, slow, encoder = encode_both(tokenizer, max_len=max_len, truncation=truncation,
                                      label_turns=label_turns)
    same(fast, slow)
    assert encoder.byte_misses == 0
    kinds = {type(r) for r in fast}
    assert Encoded in kinds
    if max_len == 300:  # the long chats were cut (middle) or skipped (drop)
        assert (any(r.truncated for r in fast if isinstance(r, Encoded)) if truncation == "middle"
                else any(isinstance(r, Skipped) and r.reason == "too_long" for r in fast))


def test_byte_starts_with_llama2_inst_eos_labels(llama_like):
    """LongAlign's layout labels the token after each earlier answer with EOS: found by its
    character position, the same by bytes."""
    fast, slow, encoder = encode_both(llama_like, max_len=1 << 16, chat_template="llama2-inst")
    same(fast, slow)
    assert encoder.byte_misses == 0 and any(isinstance(r, Encoded) for r in fast)


def test_the_first_token_at_a_character_inside_a_split_character(tiny_model):
    """An emoji is four bytes and several tokens here: every character position maps to the
    token the offsets name, including positions right after it."""
    tokenizer = load_tokenizer(tiny_model)
    backend = tokenizer.backend_tokenizer
    text = "ab😴c🧑🏽‍💻 d日本e"
    enc = backend.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int32)
    starts = ByteStarts.build(backend).starts(text, ids)
    assert starts is not None and len(ids) > len(text) // 2  # some characters are split
    via_bytes = offsets.TokenStarts(len(ids), text=text, byte_starts=starts)
    via_offsets = offsets.TokenStarts(len(ids), enc=enc)
    assert [via_bytes.first_at(c) for c in range(len(text) + 1)] == [
        via_offsets.first_at(c) for c in range(len(text) + 1)]


def test_starts_refuse_tokens_that_do_not_tile_the_text(tiny_model):
    backend = load_tokenizer(tiny_model).backend_tokenizer
    table = ByteStarts.build(backend)
    ids = np.asarray(backend.encode("hello world", add_special_tokens=False).ids, dtype=np.int32)
    assert table.starts("hello world", ids) is not None
    assert table.starts("hello World", ids) is None  # same length, other bytes
    assert table.starts("hello worlds", ids) is None
    assert table.starts("hello world", np.asarray([10 ** 7], dtype=np.int32)) is None


def byte_level(**changes):
    """A small byte-level BPE tokenizer, changed as asked (normalizer, pre_tokenizer, model,
    added token)."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(**changes.get("model", {})))
    tok.pre_tokenizer = changes.get("pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=False))
    if "normalizer" in changes:
        tok.normalizer = normalizers.NFKC()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  **changes.get("model", {}))
    tok.train_from_iterator(["the cat sat on the mat " * 20, "héllo wörld " * 20], trainer)
    if "added" in changes:
        tok.add_special_tokens([AddedToken("<sep>", **changes["added"])])
    return tok


def test_only_byte_level_bpe_without_normalizer_gets_byte_starts():
    from tokenizers import Tokenizer, models, pre_tokenizers

    assert ByteStarts.build(byte_level()) is not None
    assert ByteStarts.build(byte_level(added={"lstrip": False})) is not None
    assert ByteStarts.build(byte_level(normalizer=True)) is None
    assert ByteStarts.build(byte_level(added={"lstrip": True})) is None
    assert ByteStarts.build(byte_level(pre_tokenizer=pre_tokenizers.ByteLevel(
        add_prefix_space=True))) is None
    assert ByteStarts.build(byte_level(pre_tokenizer=pre_tokenizers.Metaspace())) is None
    assert ByteStarts.build(byte_level(pre_tokenizer=pre_tokenizers.Sequence([
        pre_tokenizers.Digits(), pre_tokenizers.ByteLevel(add_prefix_space=False)]))) is not None
    assert ByteStarts.build(byte_level(model={"continuing_subword_prefix": "##"})) is None
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert ByteStarts.build(wordpiece) is None


def test_texts_the_bytes_do_not_tile_are_encoded_again_with_offsets(tiny_model, monkeypatch,
                                                                    caplog):
    """Every text that fails the check is tokenised again with offsets (same output); after
    BYTE_MISSES of them the encoder stops trying, with a warning."""
    tokenizer = load_tokenizer(tiny_model)
    slow = ChatEncoder(tokenizer, 1 << 16, byte_starts=False)
    ids = [f"c{k}" for k in range(len(CHATS))]
    expected = slow.encode_batch(ids, CHATS)
    monkeypatch.setattr(ByteStarts, "starts", lambda self, text, ids: None)
    encoder = ChatEncoder(tokenizer, 1 << 16)
    with caplog.at_level(logging.WARNING, logger="longalign"):
        same(encoder.encode_batch(ids, CHATS), expected)
        assert encoder.byte_misses == len(CHATS) and encoder.byte_starts
        same(encoder.encode_batch(ids, CHATS), expected)  # crosses BYTE_MISSES
    assert encoder.byte_misses == BYTE_MISSES and not encoder.byte_starts
    assert "did not tile their bytes" in caplog.text
    same(encoder.encode_batch(ids, CHATS), expected)  # offsets from now on
