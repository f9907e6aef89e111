"""Chat-template tokenisation: assistant-only labels, boundary masking, bad input, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from longalign.errors import UserError
from longalign.models import load_tokenizer
from longalign.formats import IGNORE
from longalign.packing.encode import ChatEncoder, Encoded, Skipped


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


TWO_TURNS = chat(("user", "Hi there, read this."), ("assistant", "Hello! I read it."),
                 ("user", "And now?"), ("assistant", "Done."))


def target_runs(tokenizer, enc: Encoded) -> list[str]:
    """Decoded maximal runs of consecutive target tokens."""
    runs, cur = [], []
    for tok, lab in zip(enc.input_ids.tolist(), enc.labels.tolist()):
        if lab != IGNORE:
            assert lab == tok  # labels are aligned, not shifted
            cur.append(tok)
        elif cur:
            runs.append(tokenizer.decode(cur))
            cur = []
    if cur:
        runs.append(tokenizer.decode(cur))
    return runs


def encode_one(tokenizer, messages, **kw) -> Encoded | Skipped:
    kw.setdefault("max_len", 4096)
    return ChatEncoder(tokenizer, **kw).encode_batch(["x"], [messages])[0]


def test_ids_match_the_chat_template_and_labels_cover_assistant_turns(tokenizer):
    enc = encode_one(tokenizer, TWO_TURNS)
    assert isinstance(enc, Encoded)
    assert enc.input_ids.dtype == np.int32 and enc.labels.dtype == np.int32
    expected = tokenizer.apply_chat_template(TWO_TURNS, tokenize=True)["input_ids"]
    assert enc.input_ids.tolist() == expected
    # content + end-of-turn token, never the role header or the newline after <|im_end|>
    assert target_runs(tokenizer, enc) == ["Hello! I read it.<|im_end|>", "Done.<|im_end|>"]
    assert enc.labels[0] == IGNORE
    assert enc.truncated is False  # a bool (stored as such in the Arrow column)


def test_truncation_or_padding_set_on_the_tokenizer_does_not_cut_samples(tiny_model):
    # The encoder calls the Rust tokenizer directly; a truncation or padding left on it by an
    # earlier call through transformers must not shorten or pad the samples.
    own = load_tokenizer(tiny_model)
    expected = own.apply_chat_template(TWO_TURNS, tokenize=True)["input_ids"]
    encoder = ChatEncoder(own, 4096)
    assert encoder.backend is own.backend_tokenizer  # nothing set: no copy is made
    own.backend_tokenizer.enable_truncation(max_length=5)
    own.backend_tokenizer.enable_padding(length=200)
    enc = encoder.encode_batch(["x"], [TWO_TURNS])[0]
    assert isinstance(enc, Encoded) and enc.input_ids.tolist() == expected
    assert own.backend_tokenizer.truncation["max_length"] == 5  # the tokenizer's own is untouched
    # the same when special tokens are set to be split (transformers' split_special_tokens)
    fresh = load_tokenizer(tiny_model)
    fresh.backend_tokenizer.encode_special_tokens = True
    enc = ChatEncoder(fresh, 4096).encode_batch(["x"], [TWO_TURNS])[0]
    assert isinstance(enc, Encoded) and enc.input_ids.tolist() == expected


def test_non_ascii_text_keeps_character_offsets(tokenizer):
    messages = chat(("user", "Où est le café ☕? 東京の天気は？ 🙂" * 3), ("assistant", "À Paris, ☕ 東京 🙂!"))
    enc = encode_one(tokenizer, messages)
    assert target_runs(tokenizer, enc) == ["À Paris, ☕ 東京 🙂!<|im_end|>"]


def test_label_turns_last(tokenizer):
    enc = encode_one(tokenizer, TWO_TURNS, label_turns="last")
    assert target_runs(tokenizer, enc) == ["Done.<|im_end|>"]


def test_batch_keeps_order_and_mixes_good_and_bad(tokenizer):
    encoder = ChatEncoder(tokenizer, 4096)
    out = encoder.encode_batch(["a", "b", "c"], [TWO_TURNS, chat(("user", "only")), TWO_TURNS[:2]])
    assert [type(o).__name__ for o in out] == ["Encoded", "Skipped", "Encoded"]
    assert [o.id for o in out] == ["a", "b", "c"]
    assert target_runs(tokenizer, out[2]) == ["Hello! I read it.<|im_end|>"]


@pytest.mark.parametrize("messages,reason", [
    (chat(("user", "hello"), ("user", "again")), "no_assistant"),
    (chat(("user", ""), ("assistant", "x")), "empty_message"),
    (chat(("user", "q"), ("assistant", "  \n")), "empty_message"),
    (chat(("tool", "q"), ("assistant", "x")), "bad_role"),
    (chat(("user", "q"), ("Assistant", "x")), "bad_role"),
    ([], "malformed"),
    (None, "malformed"),
    ([{"role": "user", "content": None}, {"role": "assistant", "content": "x"}], "empty_message"),
    ([{"role": "user"}], "malformed"),
    (chat(("assistant", "I speak first"), ("user", "ok"), ("assistant", "x")), "assistant_first"),
])
def test_bad_input_is_skipped_with_its_reason(tokenizer, messages, reason):
    out = encode_one(tokenizer, messages)
    assert isinstance(out, Skipped) and out.reason == reason and out.detail and out.id == "x"  # the skip names it


def test_no_targets_when_the_template_drops_assistant_text(tokenizer):
    tok = load_tokenizer("embedded:tiny")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' %}"
                         "{{ m['content'] }}\n{% endif %}{% endfor %}")
    out = encode_one(tok, TWO_TURNS)
    assert isinstance(out, Skipped) and out.reason == "no_targets" and out.id == "x"


def test_first_label_is_masked_even_when_it_is_a_target(tokenizer):
    tok = load_tokenizer("embedded:tiny")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}"
                         "{{ m['content'] }}{% endif %}{% endfor %}")
    enc = encode_one(tok, chat(("user", "ok"), ("assistant", "Hello there friend")))
    assert isinstance(enc, Encoded)
    assert enc.labels[0] == IGNORE
    assert (enc.labels[1:] == enc.input_ids[1:])[:2].all()  # the rest of the turn is trained


def test_template_that_is_not_prefix_stable(tokenizer):
    tok = load_tokenizer("embedded:tiny")
    # renders only the last message: an earlier prefix is not a prefix of the whole chat
    tok.chat_template = "{{ messages[-1]['content'] }}"
    out = encode_one(tok, TWO_TURNS)
    assert isinstance(out, Skipped) and out.reason == "template_mismatch" and out.id == "x"


def test_template_whose_prefix_is_not_in_the_whole_chat(tokenizer):
    tok = load_tokenizer("embedded:tiny")
    # the generation prompt's rendering is a prefix of each turn's, but every rendering ends in
    # its message count, so a turn's rendering is not a prefix of the whole chat
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                         "{% if not add_generation_prompt %}|{{ messages | length }}{% endif %}")
    out = encode_one(tok, TWO_TURNS)
    assert isinstance(out, Skipped) and out.reason == "template_mismatch"


def test_a_message_without_a_role_is_a_counted_skip(tokenizer):
    out = encode_one(tokenizer, [{"content": "Hi there."}, {"role": "assistant", "content": "Hello."}])
    assert isinstance(out, Skipped) and out.reason == "malformed"


def test_template_that_raises_is_a_counted_skip(tokenizer):
    tok = load_tokenizer("embedded:tiny")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('no system') }}{% endif %}{{ m['content'] }}{% endfor %}")
    out = encode_one(tok, chat(("system", "s"), ("user", "u"), ("assistant", "a")))
    assert isinstance(out, Skipped) and out.reason == "template_error" and out.id == "x"


def test_the_first_failure_in_render_order_is_the_reported_reason(tokenizer):
    # The renderings are made in batched calls; when one raises, the reason is still the first
    # failure in the order of the checks: here the first turn is not prefix-stable (messages in
    # reverse) before the second turn's generation prompt raises.
    tok = load_tokenizer("embedded:tiny")
    tok.chat_template = ("{% if add_generation_prompt and messages|length > 2 %}"
                         "{{ raise_exception('refused') }}{% endif %}"
                         "{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}")
    out = encode_one(tok, TWO_TURNS)
    assert isinstance(out, Skipped) and out.reason == "template_mismatch"
    tok.chat_template = tok.chat_template.replace("|reverse", "")  # now only the raise is left
    out = encode_one(tok, TWO_TURNS)
    assert isinstance(out, Skipped) and out.reason == "template_error" and "refused" in out.detail


def test_encoder_needs_a_chat_template():
    tok = load_tokenizer("embedded:tiny")
    tok.chat_template = None
    with pytest.raises(UserError):
        ChatEncoder(tok, 128)


LONG = chat(("user", "lorem ipsum " * 400 + "What is it?"), ("assistant", "It is filler."),
            ("user", "Sure?"), ("assistant", "Yes, quite sure about it."))


def test_drop_too_long(tokenizer):
    full = encode_one(tokenizer, LONG)
    out = encode_one(tokenizer, LONG, max_len=len(full.input_ids) - 1)
    assert isinstance(out, Skipped) and out.reason == "too_long"
    exact = encode_one(tokenizer, LONG, max_len=len(full.input_ids))
    assert isinstance(exact, Encoded) and not exact.truncated


@pytest.mark.parametrize("label_turns", ["all", "last"])
def test_middle_truncation_keeps_head_and_the_whole_last_turn(tokenizer, label_turns):
    full = encode_one(tokenizer, LONG, label_turns=label_turns)
    n = len(full.input_ids)
    max_len = 300
    out = encode_one(tokenizer, LONG, max_len=max_len, truncation="middle", label_turns=label_turns)
    assert isinstance(out, Encoded) and out.truncated
    assert len(out.input_ids) == max_len
    head = max_len // 2  # the last turn is short, so the cut is in the middle
    ids = out.input_ids.tolist()
    assert ids[:head] == full.input_ids[:head].tolist()
    assert ids[head:] == full.input_ids[n - (max_len - head):].tolist()
    assert out.labels[head] == IGNORE and out.labels[0] == IGNORE
    # the cut is inside the document, so every target survives
    assert target_runs(tokenizer, out) == target_runs(tokenizer, full)
    assert out.labels[head + 1:].tolist() == full.labels[n - (max_len - head) + 1:].tolist()


def test_middle_truncation_with_a_long_last_turn(tokenizer):
    messages = chat(("user", "doc " * 200), ("assistant", "answer " * 100))
    full = encode_one(tokenizer, messages)
    tail = 100 + 5  # the answer, <|im_end|>, "\n" and the "<|im_start|>assistant\n" header
    out = encode_one(tokenizer, messages, max_len=150, truncation="middle")
    assert isinstance(out, Encoded) and len(out.input_ids) == 150
    assert 150 - tail < 75  # the head shrank so the whole last turn fits
    assert target_runs(tokenizer, out) == target_runs(tokenizer, full)
    tiny = encode_one(tokenizer, messages, max_len=64, truncation="middle")
    assert isinstance(tiny, Skipped) and tiny.reason == "too_long" and tiny.id == "x"


@pytest.mark.parametrize("label_turns", ["all", "last"])
def test_llama2_inst_layout_and_labels(tokenizer, label_turns):
    """LongAlign's Llama layout: with every turn labelled, an earlier answer is followed by a token
    that learns EOS (its input is the turn separator), and the last answer ends with EOS."""
    system = chat(("system", "Be brief."))
    enc = encode_one(tokenizer, system + TWO_TURNS, chat_template="llama2-inst", label_turns=label_turns)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    assert tokenizer.decode(enc.input_ids.tolist()) == (
        f"{bos}[INST]<<SYS>>\nBe brief.\n<</SYS>>\n\nHi there, read this.[/INST]Hello! I read it."
        f"\n\n[INST]And now?[/INST]Done.{eos}")
    ids, labels = enc.input_ids.tolist(), enc.labels.tolist()
    eos_learned = [i for i, (tok, lab) in enumerate(zip(ids, labels)) if lab == tokenizer.eos_token_id != tok]
    if label_turns == "all":
        (at,) = eos_learned
        assert tokenizer.decode(ids[at]).startswith("\n")  # the separator's first token learns EOS
        labels[at] = ids[at]
        runs = target_runs(tokenizer, Encoded(enc.id, enc.input_ids, np.asarray(labels, dtype=np.int32), False))
        assert runs == ["Hello! I read it." + tokenizer.decode(ids[at]), "Done." + eos]  # right after the answer
    else:
        assert target_runs(tokenizer, enc) == ["Done." + eos] and eos_learned == []
    assert labels[0] == IGNORE


def test_llama2_inst_needs_alternating_turns(tokenizer):
    out = encode_one(tokenizer, chat(("assistant", "Hi"), ("user", "Ho")), chat_template="llama2-inst")
    assert isinstance(out, Skipped) and out.reason == "template_error" and "in turn" in out.detail


def test_llama2_inst_last_turn_only_and_middle_truncation_keep_the_last_turn(tokenizer):
    long_user = " ".join(f"word{i}" for i in range(300))
    last = "The final answer has several words in it, to be kept whole."
    messages = chat(("user", long_user), ("assistant", "First."), ("user", "Second?"), ("assistant", "Second."),
                    ("user", "Third?"), ("assistant", last))
    full = encode_one(tokenizer, messages, chat_template="llama2-inst", label_turns="last", max_len=4096)
    assert full.id == "x" and target_runs(tokenizer, full) == [last + tokenizer.eos_token]
    ids = full.input_ids.tolist()
    start = max(p for p in range(len(ids)) if tokenizer.decode(ids[p:]).startswith("[/INST]"))
    tail = len(ids) - start  # from the [/INST] before the last answer to the end
    cut = encode_one(tokenizer, messages, chat_template="llama2-inst", label_turns="last", max_len=tail + 10,
                     truncation="middle")
    assert cut.truncated and cut.input_ids.tolist() == ids[:10] + ids[start:]
    assert target_runs(tokenizer, cut) == [last + tokenizer.eos_token]
    bad = encode_one(tokenizer, chat(("assistant", "Hi")), chat_template="llama2-inst")
    assert isinstance(bad, Skipped) and bad.id == "x"


def test_the_template_name_recorded_for_training(tokenizer):
    """The packed data records which template rendered it (the training stage reads it back): the
    name of a named template, "jinja" for one given as Jinja text."""
    jinja = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    names = {spec: ChatEncoder(tokenizer, 64, chat_template=spec).template_name
             for spec in ("tokenizer", "llama2-inst", "chatml", jinja)}
    assert names == {"tokenizer": "tokenizer", "llama2-inst": "llama2-inst", "chatml": "chatml", jinja: "jinja"}
