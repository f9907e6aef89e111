"""The chunked loss head equals the unchunked loss, and never holds all logits at once."""

import pytest
import torch
from training_helpers import make_samples, one_thread, tiny_llama  # noqa: F401 (fixture)

from longalign.errors import UserError
from longalign.training import packed_loss
from longalign.training.attention import register
from longalign.training.data import Batch
from longalign.training.head import (LossHead, chunked_cross_entropy, install_loss_head,
                                     remove_loss_head)
from longalign.training.loop import micro_batch_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(samples):
    ids = torch.tensor([t for s, _ in samples for t in s])[None]
    labels = torch.tensor([t for _, lab in samples for t in lab])[None]
    pos = torch.cat([torch.arange(len(s)) for s, _ in samples])[None]
    return Batch(ids, labels, pos, [[len(s) for s, _ in samples]])


@pytest.mark.parametrize("mode", ["longalign", "token"])
def test_chunked_head_loss_and_gradients_equal_full_logits(mode):
    samples = make_samples(6, 97, seed=5, min_len=10, max_len=30)
    batch = _batch(samples)
    ref_model = tiny_llama(dtype=torch.float64)
    ref_model.config._attn_implementation = register()
    logits = ref_model(input_ids=batch.input_ids, position_ids=batch.position_ids).logits
    ref = packed_loss(logits, batch.labels, batch.position_ids, mode=mode, num_sequences=9,
                      num_tokens=200)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in ref_model.named_parameters()}

    model = tiny_llama(dtype=torch.float64)
    model.config._attn_implementation = register()
    head = install_loss_head(model, "chunked", chunk_size=7)  # several chunks
    calls = []
    head.inner.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    loss, seq_losses = micro_batch_loss(model, batch, mode=mode, num_sequences=9,
                                        num_tokens=200, attn_implementation=register())
    assert loss.ndim == 0 and abs(float(loss.detach()) - float(ref.detach())) < 1e-12
    n_targets = sum(sum(1 for t in lab[1:] if t != -100) for _, lab in samples)
    assert max(calls) == 7 and sum(calls) == n_targets  # never more than one chunk of logits
    loss.backward()
    # backward recomputed each chunk's logits, one chunk at a time
    assert max(calls) == 7 and sum(calls) == 2 * n_targets
    grads = dict(model.named_parameters())
    worst = max(float((grads[n.replace("lm_head.", "lm_head.inner.")].grad - g).abs().max())
                for n, g in ref_grads.items() if n.replace("lm_head.", "lm_head.inner.") in grads)
    assert worst < 1e-10
    assert len(seq_losses) == len(samples) and all(v is not None for v in seq_losses)


def test_chunked_cross_entropy_function_matches_one_chunk():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False).double()
    hidden = torch.randn(23, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    weights = torch.rand(23, dtype=torch.float64)
    whole, ce_whole = chunked_cross_entropy(head, hidden, targets, weights, 100)
    g_whole = torch.autograd.grad(whole, [hidden, head.weight])
    parts, ce_parts = chunked_cross_entropy(head, hidden, targets, weights, 4)
    g_parts = torch.autograd.grad(parts, [hidden, head.weight])
    assert abs(float((whole - parts).detach())) < 1e-12 and torch.allclose(ce_whole, ce_parts)
    assert all((a - b).abs().max() < 1e-12 for a, b in zip(g_whole, g_parts))
    empty, _ = chunked_cross_entropy(head, hidden[:0], targets[:0], weights[:0], 4)
    assert float(empty.detach()) == 0.0


def test_unarmed_head_is_the_plain_head_and_removal_restores_it():
    model = tiny_llama()
    original = model.get_output_embeddings()
    head = install_loss_head(model, "chunked", 16)
    assert isinstance(model.get_output_embeddings(), LossHead) and head.inner is original
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert out.shape == (1, 3, 97)
    remove_loss_head(model)
    assert model.get_output_embeddings() is original
    assert "lm_head.weight" in model.state_dict()


def test_models_that_post_process_logits_are_refused():
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(UserError, match="soft-capping"):
        install_loss_head(model, "chunked", 16)


def test_liger_is_imported_only_when_selected_and_missing_is_a_user_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_liger(name, *args, **kwargs):
        if name.startswith("liger_kernel"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_liger)
    model = tiny_llama()
    head = install_loss_head(model, "liger", 16)  # installing does not import it
    batch = _batch(make_samples(2, 97, seed=1))
    with pytest.raises(UserError, match="liger-kernel>=0.8.2"):
        micro_batch_loss(model, batch, mode="token", num_sequences=2, num_tokens=10,
                         attn_implementation=register())
    assert head.mode == "liger"
