"""Named chat templates: LongAlign's Llama format exactly, ChatML, Jinja strings."""

from __future__ import annotations

import numpy as np
import pytest

from longalign.errors import UserError
from longalign.models import load_tokenizer
from longalign.packing.encode import IGNORE, ChatEncoder, Encoded, Skipped
from longalign.packing.templates import (CHATML, LLAMA2_INST, ChatRenderer, llama2_inst_parts,
                                         resolve_template)

TWO_TURNS = [{"role": "user", "content": "Read this: the cat sat on the mat. Where is the cat?"},
             {"role": "assistant", "content": "On the mat."},
             {"role": "user", "content": "And what did it do?"},
             {"role": "assistant", "content": "It sat there, quietly."}]


def longalign_reference(tokenizer, messages):
    """THUDM/LongAlign pre_tokenize.py's procedure for Llama, step by step: answers wrapped in
    two marker tokens, the pairs rendered '[INST]{}[/INST]{}' and joined by a blank line,
    tokenised once with the BOS, EOS appended; labels on every token from the begin marker to
    the end marker, the token after the end marker labelled EOS, markers then removed from
    ids and labels, and the last label EOS."""
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer.__class__.from_str(
        tokenizer.backend_tokenizer.to_str()), bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"cls_token": "<<BEGIN>>", "sep_token": "<<END>>"})
    begin, end = tok.convert_tokens_to_ids("<<BEGIN>>"), tok.convert_tokens_to_ids("<<END>>")
    eos = tok.eos_token_id
    pairs = [f"[INST]{messages[i]['content']}[/INST]<<BEGIN>>{messages[i + 1]['content']}<<END>>"
             for i in range(0, len(messages) - 1, 2)]
    ids = tok("\n\n".join(pairs))["input_ids"] + [eos]
    labels = [IGNORE] * len(ids)
    starts = [k for k, t in enumerate(ids) if t == begin]
    ends = [k for k, t in enumerate(ids) if t == end]
    for a, b in zip(starts, ends):
        labels[a:b + 1] = ids[a:b + 1]
        labels[b + 1] = eos
    keep_ids = [t for t in ids if t not in (begin, end)]
    keep_labels = [t for t in labels if t not in (begin, end)]
    keep_labels[-1] = eos
    return keep_ids, keep_labels


def test_llama2_inst_renders_longalign_format_for_a_two_turn_chat_exactly(llama_like):
    enc = ChatEncoder(llama_like, 4096, chat_template="llama2-inst").encode_batch(
        ["x"], [TWO_TURNS])[0]
    assert isinstance(enc, Encoded)
    ids, labels = longalign_reference(llama_like, TWO_TURNS)
    assert enc.input_ids.tolist() == ids
    assert enc.labels.tolist() == labels
    assert llama_like.decode(enc.input_ids) == (
        "<s>[INST]Read this: the cat sat on the mat. Where is the cat?[/INST]On the mat."
        "\n\n[INST]And what did it do?[/INST]It sat there, quietly.</s>")
    # the first answer is followed by "\n\n" in the input but its next label is EOS
    k = len(llama_like("<s>[INST]Read this: the cat sat on the mat. Where is the cat?"
                       "[/INST]On the mat.", add_special_tokens=False)["input_ids"])
    assert enc.labels[k] == llama_like.eos_token_id != enc.input_ids[k]


def test_llama2_inst_jinja_is_the_same_format_and_prompts_end_at_the_answer(llama_like):
    system = [{"role": "system", "content": "Be brief."}]
    for chat in (TWO_TURNS, TWO_TURNS[:2], system + TWO_TURNS):
        parts = llama2_inst_parts(chat, "<s>", "</s>")
        rendered = llama_like.apply_chat_template(chat, tokenize=False, chat_template=LLAMA2_INST)
        assert rendered == "".join(p.text for p in parts)
    prompt = llama_like.apply_chat_template(TWO_TURNS[:3], tokenize=False,
                                            add_generation_prompt=True, chat_template=LLAMA2_INST)
    assert prompt.endswith("\n\n[INST]And what did it do?[/INST]")
    assert "".join(p.text for p in llama2_inst_parts(system + TWO_TURNS[:2], "<s>", "</s>")) == (
        "<s>[INST]<<SYS>>\nBe brief.\n<</SYS>>\n\n" + TWO_TURNS[0]["content"]
        + "[/INST]On the mat.</s>")


def test_llama2_inst_label_turns_last_and_bad_turn_order(llama_like):
    enc = ChatEncoder(llama_like, 4096, label_turns="last", chat_template="llama2-inst")
    out = enc.encode_batch(["x"], [TWO_TURNS])[0]
    targets = [t for t in out.labels.tolist() if t != IGNORE]
    answer = llama_like("It sat there, quietly.", add_special_tokens=False)["input_ids"]
    assert targets == answer + [llama_like.eos_token_id]
    bad = enc.encode_batch(["y"], [[TWO_TURNS[0], TWO_TURNS[2], TWO_TURNS[1]]])[0]
    assert isinstance(bad, Skipped) and bad.reason == "template_error"


def test_middle_truncation_keeps_the_last_llama2_turn(llama_like):
    long = [{"role": "user", "content": "word " * 400 + "Where?"},
            {"role": "assistant", "content": "Here."}]
    enc = ChatEncoder(llama_like, 64, truncation="middle", chat_template="llama2-inst")
    out = enc.encode_batch(["x"], [long])[0]
    assert len(out.input_ids) == 64 and out.truncated
    assert llama_like.decode(out.input_ids).endswith("Where?[/INST]Here.</s>")


def test_chatml_and_jinja_strings_go_through_the_prefix_method(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    chatml = ChatEncoder(tokenizer, 4096, chat_template="chatml").encode_batch(["x"], [TWO_TURNS])[0]
    text = tokenizer.decode(chatml.input_ids)
    assert text.startswith("<|im_start|>user\nRead this") and "system" not in text
    runs = tokenizer.decode(chatml.input_ids[chatml.labels != IGNORE])
    assert runs == "On the mat.<|im_end|>It sat there, quietly.<|im_end|>"
    jinja = ("{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}assistant:\n{% endif %}")
    custom = ChatEncoder(tokenizer, 4096, chat_template=jinja).encode_batch(["x"], [TWO_TURNS])[0]
    assert tokenizer.decode(custom.input_ids).startswith("user:\nRead this")
    assert tokenizer.decode(custom.input_ids[custom.labels != IGNORE]) == (
        "On the mat.It sat there, quietly.")


def test_template_names_are_checked(llama_like, tiny_model):
    with pytest.raises(UserError, match="chatml needs"):
        resolve_template("chatml", llama_like)
    with pytest.raises(UserError, match="unknown chat_template"):
        resolve_template("llama3", llama_like)
    with pytest.raises(UserError, match="no chat template"):
        resolve_template("tokenizer", llama_like)
    assert resolve_template("tokenizer", load_tokenizer(tiny_model))
    assert np.int32 == ChatEncoder(llama_like, 64, chat_template="llama2-inst").encode_batch(
        ["x"], [TWO_TURNS[:2]])[0].labels.dtype


# Templates of the kinds users bring: the variables transformers passes (bos_token, eos_token,
# add_generation_prompt), a namespace, loop variables, a filter, and raise_exception on a bad chat.
SYSTEM_FIRST = (
    "{{ bos_token }}{% if messages[0]['role'] != 'system' %}"
    "{{ raise_exception('the first message must be a system message') }}{% endif %}"
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
    "[{{ ns.n }}|{{ loop.index0 }}|{{ m['role'] | upper }}] {{ m['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}")


@pytest.mark.parametrize("template", ["tokenizer", "chatml", "llama2-inst", "system-first"])
def test_the_compiled_renderer_renders_exactly_what_apply_chat_template_does(tiny_model, template):
    """Every prefix of several chats (with and without a system message, one to three turns,
    unicode, Jinja-looking text in the content), with and without the generation prompt, and the
    errors a template raises: the same by both routes."""
    tokenizer = load_tokenizer(tiny_model)
    jinja = SYSTEM_FIRST if template == "system-first" else resolve_template(template, tokenizer)
    renderer = ChatRenderer(tokenizer, jinja)
    assert renderer.compiled
    system = [{"role": "system", "content": "  Be brief. {{ not a tag }} {% raw %}  "}]
    chats = [TWO_TURNS, system + TWO_TURNS, system + TWO_TURNS[:2] + [
        {"role": "user", "content": "Über naïve café — 日本語? " * 3},
        {"role": "assistant", "content": "Ja.\n\n  "}]]
    for chat in chats:
        prefixes = [chat[:k] for k in range(1, len(chat) + 1)]
        for generation in (False, True):
            def reference(prefix):
                try:
                    return tokenizer.apply_chat_template(prefix, tokenize=False, chat_template=jinja,
                                                         add_generation_prompt=generation)
                except Exception as exc:  # noqa: BLE001
                    return type(exc), str(exc)

            def ours(prefix):
                try:
                    return renderer([prefix], generation)[0]
                except Exception as exc:  # noqa: BLE001
                    return type(exc), str(exc)

            expected = [reference(p) for p in prefixes]
            assert [ours(p) for p in prefixes] == expected
            if all(isinstance(e, str) for e in expected):
                assert renderer(prefixes, generation) == expected
    if template == "system-first":  # the errors were compared too
        with pytest.raises(Exception, match="must be a system message"):
            renderer([TWO_TURNS])


def test_the_renderer_falls_back_to_transformers_when_its_compiler_is_out_of_reach(
        tiny_model, monkeypatch):
    import transformers.utils.chat_template_utils as ctu

    tokenizer = load_tokenizer(tiny_model)
    monkeypatch.delattr(ctu, "_compile_jinja_template")  # a release that renamed it
    renderer = ChatRenderer(tokenizer, CHATML)
    monkeypatch.undo()  # transformers' own call needs it
    assert not renderer.compiled
    assert renderer([TWO_TURNS], True) == [tokenizer.apply_chat_template(
        TWO_TURNS, tokenize=False, add_generation_prompt=True, chat_template=CHATML)]


def test_the_renderer_falls_back_when_the_routes_disagree_on_the_probe(tiny_model, monkeypatch):
    """A transformers release that passes the template a variable we do not (here: a date) must
    not change what packing renders."""
    tokenizer = load_tokenizer(tiny_model)
    dated = "{{ today }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    original = type(tokenizer).apply_chat_template

    def with_date(self, *args, **kwargs):
        return original(self, *args, today="2026-12-02", **kwargs)

    monkeypatch.setattr(type(tokenizer), "apply_chat_template", with_date)
    renderer = ChatRenderer(tokenizer, dated)
    assert not renderer.compiled
    assert renderer([TWO_TURNS[:1]]) == ["2026-12-02" + TWO_TURNS[0]["content"]]
    assert ChatRenderer(tokenizer, CHATML).compiled  # a template that ignores it is unaffected
