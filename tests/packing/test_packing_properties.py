"""Property tests of the encoding and row layout: random chats, encoded, planned, written as Arrow
rows and read back. A packed row decodes to the concatenation of its samples' chat renderings,
labels sit only on assistant turns, and no label is ever predicted across a sample boundary."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from longalign.models import load_tokenizer
from longalign.packing import plan_packs
from longalign.formats import IGNORE
from longalign.packing.encode import ChatEncoder, Encoded, Skipped
from longalign.packing.store import SampleStore, write_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def encoders(tokenizer):
    """Encoders by truncation policy; a test sets ``max_len`` and ``label_turns`` (building one
    takes a second)."""
    return {t: ChatEncoder(tokenizer, 64, t) for t in ("drop", "middle")}


# Any Unicode text (no surrogates), including newlines, control characters, accents, CJK, emoji
# and the chat template's own special-token strings.
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60),
    st.text(st.sampled_from(list("ab \n\t.é東🙂<|>")), min_size=1, max_size=30),
    st.sampled_from(["<|im_end|>", "<|im_start|>user", "{{ x }}", " \n x"]),
).filter(lambda t: t.strip())
# Assistant answers start with a visible character: a leading space or newline may be merged by
# the tokenizer with the newline that ends the role header, and would then not be a target.
ANSWER = TEXT.filter(lambda t: not t[0].isspace())


@st.composite
def chats(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(TEXT)})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(TEXT)})
        messages.append({"role": "assistant", "content": draw(ANSWER)})
    kind = draw(st.sampled_from(["good"] * 6 + ["no_assistant", "empty_message", "bad_role"]))
    if kind == "no_assistant":
        messages = [m for m in messages if m["role"] != "assistant"]
    elif kind == "empty_message":
        messages[draw(st.integers(0, len(messages) - 1))]["content"] = draw(st.sampled_from(["", " \n"]))
    elif kind == "bad_role":
        messages[draw(st.integers(0, len(messages) - 1))]["role"] = draw(st.sampled_from(["tool", "User"]))
    return kind, messages


def target_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive target tokens."""
    runs, cur = [], []
    for tok, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == tok  # labels are aligned with input_ids
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(chats(), min_size=1, max_size=12), st.integers(40, 400), st.integers(0, 2**16))
def test_packed_rows_decode_to_the_samples_and_labels_stay_inside(tokenizer, encoders, batch,
                                                                   max_len, seed):
    encoder = encoders["drop"]
    encoder.max_len, encoder.label_turns = max_len, "all"
    ids = [f"c{n}" for n in range(len(batch))]
    out = encoder.encode_stream(zip(ids, [m for _, m in batch]), chunk_chars=200)
    results = {r.id: r for r in out}
    assert list(results) == ids  # one result per input, in order
    rendered = {}
    for sid, (kind, messages) in zip(ids, batch):
        r = results[sid]
        if kind != "good":
            assert isinstance(r, Skipped) and r.reason == kind
            continue
        # the reference: the tokenizer's own encoding of the chat template's rendering
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        expected = token_ids(tokenizer, text)
        if len(expected) > max_len:
            assert isinstance(r, Skipped) and r.reason == "too_long"
        else:
            assert isinstance(r, Encoded) and r.input_ids.tolist() == expected
            rendered[sid] = (expected, [token_ids(tokenizer, m["content"] + "<|im_end|>")
                                        for m in messages if m["role"] == "assistant"])
    kept = [r for r in results.values() if isinstance(r, Encoded)]
    assert sorted(r.id for r in kept) == sorted(rendered)
    if not kept:
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = SampleStore(tmp)
        store.append(kept)
        store.close()
        plan = plan_packs(store.lengths, max_len, seed=seed)
        names = write_rows(Path(tmp), store, [[row] for row in plan], rows_per_record_batch=3)
        store.release()
        rows = []
        for name in names:
            with pa.memory_map(str(Path(tmp) / name), "r") as source:
                rows += pa.ipc.open_file(source).read_all().to_pylist()
    assert Counter(s for row in rows for s in row["sample_ids"]) == Counter(list(rendered))
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lens"]) <= max_len
        concat = [t for s in row["sample_ids"] for t in rendered[s][0]]
        assert row["input_ids"] == concat
        assert tokenizer.decode(row["input_ids"]) == tokenizer.decode(concat)
        start = 0
        for sid, n, n_targets in zip(row["sample_ids"], row["seq_lens"], row["n_targets"]):
            ids_, labels = row["input_ids"][start:start + n], row["labels"][start:start + n]
            # the first token of a sample is never a target: nothing is predicted from the
            # previous sample's last token
            assert labels[0] == IGNORE
            assert n_targets == sum(lab != IGNORE for lab in labels) > 0
            assert target_runs(ids_, labels) == rendered[sid][1]
            start += n


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(chats().filter(lambda c: c[0] == "good"), st.integers(1, 40)),
                min_size=1, max_size=4),
       st.integers(60, 200), st.sampled_from(["all", "last"]))
def test_middle_truncation_keeps_the_last_turn_and_masks_the_cut(tokenizer, encoders, batch, max_len,
                                                                  turns):
    full, cut = encoders["drop"], encoders["middle"]
    full.max_len, cut.max_len = 10**6, max_len
    full.label_turns = cut.label_turns = turns
    messages = []
    for (_, chat), repeat in batch:  # the first user message becomes a long "document"
        first = next(m for m in chat if m["role"] == "user")
        first["content"] = first["content"] * repeat
        messages.append(chat)
    truncated = 0
    for chat, whole, r in zip(messages, full.encode_batch(list("abcd")[:len(batch)], messages),
                              cut.encode_batch(list("abcd")[:len(batch)], messages)):
        assert isinstance(whole, Encoded)
        n = len(whole.input_ids)
        if n <= max_len:
            assert isinstance(r, Encoded) and not r.truncated
            assert r.input_ids.tolist() == whole.input_ids.tolist()
            continue
        if isinstance(r, Skipped):
            assert r.reason == "too_long"
            continue
        truncated += 1
        assert r.truncated and len(r.input_ids) == max_len and r.labels[0] == IGNORE
        ids, labels = r.input_ids.tolist(), r.labels.tolist()
        # head + tail of the full sample, the tail holding the whole last assistant turn (from its
        # header on), with the label right after the cut masked
        last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
        header_at = len(token_ids(tokenizer, tokenizer.apply_chat_template(chat[:last], tokenize=False)))
        head = min(max_len // 2, max_len - (n - header_at))
        assert 0 < head <= max_len // 2
        assert ids == whole.input_ids[:head].tolist() + whole.input_ids[n - (max_len - head):].tolist()
        assert labels[head] == IGNORE
        tail_labels = whole.labels[n - (max_len - head):].tolist()
        assert labels[head + 1:] == tail_labels[1:]
        # the whole last answer survives as a target
        last = target_runs(whole.input_ids.tolist(), whole.labels.tolist())[-1]
        assert target_runs(ids, labels)[-1] == last
    event(f"truncated: {truncated > 0}")
