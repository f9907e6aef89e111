"""Packed rows through the registered per-sample attention equal each sample run alone."""

import pytest
import torch
from training_helpers import tiny_llama, one_thread  # noqa: F401 (fixture)

from longalign.training import attention
from longalign.training.attention import (ATTN_NAME, check_inputs, install_input_guard,
                                          prepare_for_packed_training, register,
                                          segments_from_position_ids, select_attention)

LENS = [5, 11, 3, 9]

pytestmark = pytest.mark.usefixtures("one_thread")


def _packed(vocab=97, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, vocab, (n,), generator=g) for n in LENS]
    row = torch.cat(ids)[None]
    pos = torch.cat([torch.arange(n) for n in LENS])[None]
    return ids, row, pos


def _ours(model):
    model.config._attn_implementation = register()
    return model


def _alone(model, ids):
    with torch.no_grad():
        return torch.cat([model(input_ids=x[None]).logits for x in ids], dim=1)


@pytest.mark.parametrize("how", ["position_ids", "seq_lens", "cu_seq_lens"])
def test_packed_logits_equal_per_sample_logits(how):
    model = _ours(tiny_llama()).eval()
    ids, row, pos = _packed()
    ref = _alone(model, ids)
    kwargs = {}
    if how == "seq_lens":
        kwargs["longalign_seq_lens"] = [LENS]
    if how == "cu_seq_lens":
        cu = torch.tensor([0] + torch.tensor(LENS).cumsum(0).tolist(), dtype=torch.int32)
        kwargs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    with torch.no_grad():
        out = model(input_ids=row, position_ids=pos, **kwargs).logits
    assert (out - ref).abs().max() < 1e-4
    # the samples really interact without boundaries, so the check above can fail
    with torch.no_grad():
        joined = model(input_ids=row).logits
    assert (joined - ref).abs().max() > 1e-2


def test_default_use_cache_config_is_still_isolated_in_train_mode():
    model = _ours(tiny_llama())
    assert model.config.use_cache  # the transformers default that breaks built-in packing
    model.train()
    ids, row, pos = _packed()
    ref = _alone(model, ids)
    with torch.no_grad():
        out = model(input_ids=row, position_ids=pos).logits
    assert (out - ref).abs().max() < 1e-4


def test_prepare_turns_off_the_cache_and_guards_inputs():
    model = prepare_for_packed_training(_ours(tiny_llama()))
    assert model.config.use_cache is False
    _, row, pos = _packed()
    with pytest.raises(ValueError, match="all-ones attention_mask"):
        model(input_ids=row, position_ids=pos, attention_mask=torch.ones_like(row))


def test_guard_catches_all_ones_mask_with_packed_rows_for_builtin_sdpa_too():
    model = tiny_llama()
    model.config._attn_implementation = "sdpa"
    install_input_guard(model)
    _, row, pos = _packed()
    with pytest.raises(ValueError, match="packed position_ids"):
        model(input_ids=row, position_ids=pos, attention_mask=torch.ones_like(row))
    # an unpacked row with a mask is fine for built-in sdpa
    model(input_ids=row, position_ids=torch.arange(row.shape[1])[None],
          attention_mask=torch.ones_like(row))


def test_check_inputs_rejects_any_mask_with_our_attention():
    flat = torch.arange(6)[None]
    check_inputs(ATTN_NAME, None, flat)
    with pytest.raises(ValueError, match="ignores attention_mask"):
        check_inputs(ATTN_NAME, torch.ones(1, 6), flat)


def test_padded_rows_match_samples_alone_and_gradients_match():
    model = _ours(tiny_llama(dtype=torch.float64))
    ids, _, _ = _packed()
    width = max(LENS)
    batch = torch.zeros(len(LENS), width, dtype=torch.long)
    for i, x in enumerate(ids):
        batch[i, :len(x)] = x
    pos = torch.arange(width).expand(len(LENS), -1)
    out = model(input_ids=batch, position_ids=pos, longalign_seq_lens=[[n] for n in LENS]).logits
    real = torch.cat([out[i, :n] for i, n in enumerate(LENS)])[None]
    assert torch.isfinite(out).all()
    ref = torch.cat([model(input_ids=x[None]).logits for x in ids], dim=1)
    assert (real - ref).abs().max() < 1e-10
    # gradients through the per-sample attention equal those of the separate runs
    weights = torch.randn(ref.shape, dtype=torch.float64)
    g1 = torch.autograd.grad((real * weights).sum(), list(model.parameters()))
    g2 = torch.autograd.grad((ref * weights).sum(), list(model.parameters()))
    assert max((a - b).abs().max() for a, b in zip(g1, g2)) < 1e-10


def test_segments_from_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert segments_from_position_ids(pos) == [[3, 2, 1], [6]]


def test_select_attention_prefers_flash_only_when_available(monkeypatch):
    from transformers import AttentionInterface

    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    assert select_attention() == "flash_attention_2"
    monkeypatch.setattr(attention, "flash_attn_available", lambda: False)
    assert select_attention() == ATTN_NAME
    assert AttentionInterface._global_mapping[register()] is attention.packed_sdpa_forward
    assert None not in AttentionInterface._global_mapping


def test_flash_attn_available_needs_cuda_and_the_package(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert attention.flash_attn_available() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: None)
    assert attention.flash_attn_available() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: object())
    assert attention.flash_attn_available() is False  # installed, but no CUDA device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention.importlib.util, "find_spec",
                        lambda name: object() if name == "flash_attn" else None)
    imported = []
    monkeypatch.setattr(attention.importlib, "import_module", lambda name: imported.append(name))
    assert attention.flash_attn_available() is True and imported == ["flash_attn"]

    def broken(name):
        raise OSError("undefined symbol: _ZN3c10...")

    monkeypatch.setattr(attention.importlib, "import_module", broken)
    assert attention.flash_attn_available() is False


# -- the attention function itself against a per-sample reference -------------------------------
def _qkv(batch, length, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, dim, generator=g, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64)
    return q, k, v


def _reference(q, k, v, segments):
    """Each sample alone (K/V heads repeated for grouped queries); right padding gives zeros."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    rows = []
    for b, lens in enumerate(segments):
        parts, at = [], 0
        for n in lens:
            sl = slice(at, at + n)
            parts.append(torch.nn.functional.scaled_dot_product_attention(
                q[b:b + 1, :, sl], k[b:b + 1, :, sl], v[b:b + 1, :, sl], is_causal=True))
            at += n
        parts.append(q.new_zeros(1, q.shape[1], q.shape[2] - at, v.shape[-1]))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2)


@pytest.mark.parametrize("how", ["seq_lens", "cu_seq_lens", "position_ids", "shared_position_ids"])
def test_packed_sdpa_forward_equals_each_sample_alone(how):
    training = torch.nn.Module()  # in training mode: the default dropout must be 0
    if how == "cu_seq_lens":
        segments = [[3, 5, 4]]
        kwargs = {"cu_seq_lens_q": torch.tensor([0, 3, 3, 8, 12])}  # an empty piece is skipped
    elif how == "seq_lens":
        segments = [[3, 5, 4], [12], [2, 7]]  # the last row is right-padded by 3
        kwargs = {"longalign_seq_lens": [[3, 5, 0, 4], [12], [2, 7]]}
    elif how == "position_ids":
        segments = [[3, 5, 4], [12]]
        kwargs = {"position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3], list(range(12))])}
    else:  # one row of positions for every row of the batch
        segments = [[6, 6], [6, 6]]
        kwargs = {"position_ids": torch.tensor([list(range(6)) * 2])}
    q, k, v = _qkv(len(segments), 12)
    out, weights = attention.packed_sdpa_forward(training, q, k, v, None, **kwargs)
    assert weights is None and out.shape == (len(segments), 12, 4, 8)
    assert torch.allclose(out, _reference(q, k, v, segments), atol=1e-12)


def test_packed_sdpa_forward_full_rows_scaling_and_dropout_outside_training():
    q, k, v = _qkv(2, 6, heads=2, kv_heads=2)
    frozen = torch.nn.Module().eval()
    out, _ = attention.packed_sdpa_forward(frozen, q, k, v, None, dropout=0.9, scaling=0.5)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)
    assert torch.allclose(out, expected.transpose(1, 2))
    one, _ = attention.packed_sdpa_forward(frozen, q[:1], k[:1], v[:1], None,
                                           longalign_seq_lens=[[6]], scaling=0.5)
    assert torch.allclose(one, out[:1])
    torch.manual_seed(0)
    dropped, _ = attention.packed_sdpa_forward(torch.nn.Module(), q, k, v, None, dropout=0.5, scaling=0.5)
    assert not torch.allclose(dropped, out)  # in training the dropout asked for is applied


def test_packed_sdpa_forward_refuses_what_it_cannot_do():
    q, k, v = _qkv(2, 6)
    module = torch.nn.Module()
    cases = [
        ({"softcap": 30.0}, f"^{ATTN_NAME} does not support attention logit soft-capping"),
        ({"attention_mask": torch.ones(2, 1, 6, 6)}, f"^{ATTN_NAME} takes no attention mask"),
        ({"longalign_seq_lens": [[6]]}, "^longalign_seq_lens has 1 rows for a batch of 2$"),
        ({"longalign_seq_lens": [[6], [4, 3]]}, r"^longalign_seq_lens \[4, 3\] exceed the row length 6$"),
        ({"cu_seq_lens_q": torch.tensor([0, 6])}, "^cu_seq_lens_q is only meaningful for a single"),
        ({"sliding_window": 3, "longalign_seq_lens": [[2, 4], [3, 3]]},
         rf"^{ATTN_NAME} does not implement sliding windows \(window 3\)$"),
    ]
    for kwargs, message in cases:
        mask = kwargs.pop("attention_mask", None)
        with pytest.raises(ValueError, match=message):
            attention.packed_sdpa_forward(module, q, k, v, mask, **kwargs)
    with pytest.raises(ValueError, match="query and key lengths differ"):
        attention.packed_sdpa_forward(module, q, k[:, :, :5], v[:, :, :5], None)
    # a window no sample exceeds is fine: per-sample attention is then exact
    out, _ = attention.packed_sdpa_forward(module, q, k, v, None, sliding_window=3,
                                           longalign_seq_lens=[[3, 3], [2, 1, 3]])
    assert torch.allclose(out, _reference(q, k, v, [[3, 3], [2, 1, 3]]), atol=1e-12)


def test_packed_detection_and_the_messages_of_check_inputs():
    mask = torch.tensor([[1, 1, 0, 1]])
    check_inputs("sdpa", mask, None)  # no positions: nothing to check against
    check_inputs("sdpa", mask, torch.tensor([[0]]))
    check_inputs("sdpa", mask, torch.arange(4))  # 1-D, counting up: not packed
    packed = "attention_mask was passed with packed position_ids: samples would attend to each other; " \
             "pass attention_mask=None$"
    for pos in (torch.tensor([[0, 0]]), torch.tensor([0, 1, 0, 1]), torch.tensor([[0, 1, 2, 3], [0, 1, 0, 1]])):
        with pytest.raises(ValueError, match="^a " + packed):
            check_inputs("sdpa", mask, pos)
    with pytest.raises(ValueError, match="^an all-ones " + packed):
        check_inputs("sdpa", torch.ones(1, 4), torch.tensor([[0, 1, 0, 1]]))
    with pytest.raises(ValueError, match=f"^{ATTN_NAME} ignores attention_mask; give sample lengths instead$"):
        check_inputs(ATTN_NAME, mask, torch.arange(4)[None])
    assert segments_from_position_ids(torch.tensor([0, 1, 0])) == [[2, 1]]  # a 1-D row


def test_the_guard_reads_a_positional_mask_and_the_models_attention():
    class Model(torch.nn.Module):
        def __init__(self, impl):
            super().__init__()
            self.config = type("Config", (), {"_attn_implementation": impl})()

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return input_ids

    ids, mask = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4)
    ours = Model(ATTN_NAME)
    install_input_guard(ours)
    ours(ids)  # no mask: fine
    with pytest.raises(ValueError, match="ignores attention_mask"):
        ours(ids, mask)  # the mask as the second positional argument
    builtin = Model("sdpa")
    install_input_guard(builtin)
    builtin(ids, mask, position_ids=torch.arange(4)[None])  # built-in attention, unpacked: fine
    with pytest.raises(ValueError, match="packed position_ids"):
        builtin(ids, mask, position_ids=torch.tensor([[0, 1, 0, 1]]))
