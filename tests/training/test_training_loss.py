"""packed_loss against per-sample references in fp64, with and without gradient accumulation."""

import pytest
import torch
import torch.nn.functional as F
from training_helpers import make_samples, tiny_llama, one_thread  # noqa: F401 (fixture)

from longalign.training import packed_loss
from longalign.training.attention import register
from longalign.training.loss import loss_targets, per_sequence_loss, weighted_cross_entropy

VOCAB = 97

pytestmark = pytest.mark.usefixtures("one_thread")


def _row(samples):
    ids = torch.tensor([t for s, _ in samples for t in s])[None]
    labels = torch.tensor([t for _, lab in samples for t in lab])[None]
    pos = torch.cat([torch.arange(len(s)) for s, _ in samples])[None]
    return ids, labels, pos


def _sample_ce(logits, labels):
    """Per-token CE of one sample run alone, transformers-style shift."""
    lab = labels[1:]
    keep = lab != -100
    return F.cross_entropy(logits[:-1][keep], lab[keep], reduction="none")


def _reference(model, samples, mode):
    """LongAlign: mean over sequences of each sequence's mean token loss; token: token mean."""
    per_seq = []
    for ids, labels in samples:
        logits = model(input_ids=torch.tensor(ids)[None]).logits[0]
        per_seq.append(_sample_ce(logits, torch.tensor(labels)))
    per_seq = [ce for ce in per_seq if ce.numel()]
    if mode == "longalign":
        return sum(ce.mean() for ce in per_seq) / len(per_seq)
    return torch.cat(per_seq).sum() / sum(ce.numel() for ce in per_seq)


def _model():
    model = tiny_llama(vocab=VOCAB, dtype=torch.float64)
    model.config._attn_implementation = register()
    model.config.use_cache = False
    return model


def _grads(loss, model):
    return torch.autograd.grad(loss, list(model.parameters()))


def _maxdiff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["longalign", "token"])
def test_packed_loss_and_gradients_equal_the_per_sample_reference(mode):
    model = _model()
    samples = make_samples(5, VOCAB, seed=3)
    ids, labels, pos = _row(samples)
    loss = packed_loss(model(input_ids=ids, position_ids=pos).logits, labels, pos, mode=mode)
    ref = _reference(model, samples, mode)
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-10
    assert _maxdiff(_grads(loss, model), _grads(ref, model)) < 1e-10


def test_the_two_modes_differ_when_lengths_differ():
    model = _model()
    samples = make_samples(5, VOCAB, seed=3)
    ids, labels, pos = _row(samples)
    logits = model(input_ids=ids, position_ids=pos).logits
    a = packed_loss(logits, labels, pos, mode="longalign")
    b = packed_loss(logits, labels, pos, mode="token")
    assert abs(float(a.detach()) - float(b.detach())) > 1e-6


@pytest.mark.parametrize("mode", ["longalign", "token"])
def test_three_accumulated_micro_batches_equal_one_big_batch(mode):
    model = _model()
    samples = make_samples(7, VOCAB, seed=5)
    groups = [samples[:2], samples[2:5], samples[5:]]
    num_sequences = sum(1 for _, lab in samples if any(t != -100 for t in lab[1:]))
    num_tokens = sum(sum(1 for t in lab[1:] if t != -100) for _, lab in samples)
    total = 0
    for group in groups:
        ids, labels, pos = _row(group)
        total = total + packed_loss(model(input_ids=ids, position_ids=pos).logits, labels, pos,
                                    mode=mode, num_sequences=num_sequences, num_tokens=num_tokens)
    ids, labels, pos = _row(samples)
    big = packed_loss(model(input_ids=ids, position_ids=pos).logits, labels, pos, mode=mode)
    assert abs(float(total.detach()) - float(big.detach())) < 1e-10
    assert _maxdiff(_grads(total, model), _grads(big, model)) < 1e-10
    assert abs(float(big.detach()) - float(_reference(model, samples, mode).detach())) < 1e-10


def test_padded_batch_equals_packed_row():
    samples = make_samples(3, VOCAB, seed=7)
    torch.manual_seed(0)
    ids, labels, pos = _row(samples)
    logits = torch.randn(1, ids.shape[1], VOCAB, dtype=torch.float64)
    width = max(len(s) for s, _ in samples)
    plog = torch.zeros(3, width, VOCAB, dtype=torch.float64)
    plab = torch.full((3, width), -100)
    start = 0
    for i, (s, lab) in enumerate(samples):
        plog[i, :len(s)] = logits[0, start:start + len(s)]
        plab[i, :len(s)] = torch.tensor(lab)
        start += len(s)
    ppos = torch.arange(width).expand(3, -1)  # padding continues the count: no new sequence
    for mode in ("longalign", "token"):
        a = packed_loss(logits, labels, pos, mode=mode)
        b = packed_loss(plog, plab, ppos, mode=mode)
        assert abs(float(a) - float(b)) < 1e-12


def test_boundary_targets_and_sequences_without_targets():
    # sample 2's first label is not masked (a packer bug): it must still not be predicted
    labels = torch.tensor([[-100, 5, 6, 7, -100, -100, 8, 9, -100, -100]])
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 0, 1, 0, 1]])
    t = loss_targets(labels, pos, mode="longalign")
    # targets: 5, 6, 7 (sequence 0) and 9 (sequence 2); 8 is a first token; sequence 3 has none
    assert t.targets.tolist() == [5, 6, 7, 9]
    assert t.seq_tokens.tolist() == [3, 0, 1, 0]
    assert t.num_sequences == 2 and t.num_tokens == 4
    expected = torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64)
    assert torch.allclose(t.weights, expected)
    t = loss_targets(labels, pos, mode="longalign", num_sequences=4)
    assert torch.allclose(t.weights, torch.tensor([1 / 12] * 3 + [1 / 4], dtype=torch.float64))
    t = loss_targets(labels, pos, mode="token", num_tokens=8)
    assert torch.allclose(t.weights, torch.full((4,), 1 / 8, dtype=torch.float64))


def test_no_targets_gives_a_zero_loss_that_backpropagates():
    logits = torch.randn(1, 4, VOCAB, requires_grad=True)
    loss = packed_loss(logits, torch.full((1, 4), -100), torch.arange(4)[None], mode="longalign")
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown loss mode 'mean'; choose one of longalign, token$"):
        packed_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                    torch.arange(2)[None], mode="mean")


def test_one_row_may_come_without_its_batch_dimension():
    torch.manual_seed(0)
    logits = torch.randn(1, 7, VOCAB, dtype=torch.float64)
    labels = torch.tensor([[-100, 5, 6, 7, -100, 8, 9]])
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    for mode in ("longalign", "token"):
        batched = packed_loss(logits, labels, pos, mode=mode)
        assert torch.equal(packed_loss(logits[0], labels[0], pos[0], mode=mode), batched)


@pytest.mark.parametrize("mode", ["longalign", "token"])
def test_a_single_target_carries_its_whole_cross_entropy(mode):
    """One sequence with one target: the loss is that token's CE (M = 1, N_1 = 1, one token)."""
    torch.manual_seed(1)
    logits = torch.randn(1, 2, VOCAB, dtype=torch.float64)
    loss = packed_loss(logits, torch.tensor([[-100, 5]]), torch.arange(2)[None], mode=mode)
    assert torch.allclose(loss, F.cross_entropy(logits[0, :1], torch.tensor([5])))


def test_half_precision_logits_are_upcast_and_the_loss_keeps_the_logits_precision():
    torch.manual_seed(2)
    logits = torch.randn(1, 6, VOCAB)
    labels, pos = torch.tensor([[-100, 3, 4, -100, 5, 6]]), torch.tensor([[0, 1, 2, 0, 1, 2]])
    full = packed_loss(logits, labels, pos, mode="longalign")
    assert full.dtype == torch.float32
    half = packed_loss(logits.bfloat16(), labels, pos, mode="longalign")
    assert half.dtype == torch.float32
    assert torch.allclose(half, packed_loss(logits.bfloat16().float(), labels, pos, mode="longalign"))
    empty_loss, empty_ce = weighted_cross_entropy(logits[0, :0], labels[0, :0], torch.zeros(0))
    assert float(empty_loss) == 0.0 and empty_ce.numel() == 0


def test_per_sequence_loss_is_each_sequences_mean_token_loss():
    torch.manual_seed(3)
    # three sequences: four tokens, three tokens, and one token (no target: its only token is a first one)
    labels = torch.tensor([[-100, 5, 6, 7, -100, 8, 9, 4]])
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0]])
    logits = torch.randn(1, 8, VOCAB, dtype=torch.float64)
    t = loss_targets(labels, pos, mode="longalign")
    _, ce = weighted_cross_entropy(logits[t.keep], t.targets, t.weights)
    first = F.cross_entropy(logits[0, :3], torch.tensor([5, 6, 7])).item()
    second = F.cross_entropy(logits[0, 4:6], torch.tensor([8, 9])).item()
    out = per_sequence_loss(ce, t)
    assert len(out) == 3 and out[2] is None
    assert out[0] == pytest.approx(first) and out[1] == pytest.approx(second)
