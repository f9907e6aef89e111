"""The learning-rate schedule: transformers' cosine with warm-up at floor 0, ProLong's floor otherwise."""

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from longalign.config import load_run_config
from longalign.training.lr import cosine_schedule, lr_multiplier


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _optimizer(lr=2e-5):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (1, 1), (30, 1000)])
def test_floor_zero_is_the_transformers_cosine_schedule(warmup, total):
    ours = _lrs(cosine_schedule(_optimizer(), warmup, total), total)
    reference = _lrs(get_cosine_schedule_with_warmup(_optimizer(), warmup, total), total)
    assert ours == pytest.approx(reference, rel=1e-12, abs=1e-18)


def test_prolong_floor_decays_to_a_tenth_and_leaves_the_warmup_alone():
    warmup, total, r = 10, 110, 0.1
    lrs = _lrs(cosine_schedule(_optimizer(1.0), warmup, total, r), total + 5)
    assert lrs[:warmup] == pytest.approx([s / warmup for s in range(warmup)])  # starts at 0, not 0.1
    assert lrs[warmup] == pytest.approx(1.0)
    assert lrs[warmup + 50] == pytest.approx(r + (1 - r) * 0.5)  # half way down the cosine
    assert lrs[total] == pytest.approx(r) and lrs[-1] == pytest.approx(r)  # the floor holds past the end
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    base = [lr_multiplier(s, warmup, total) for s in range(total)]
    assert lrs[warmup:total] == pytest.approx([r + (1 - r) * b for b in base[warmup:]])


def test_the_extend_pipeline_uses_prolongs_floor_and_alignment_keeps_longaligns():
    for preset in ("default", "tiny"):
        cfg = load_run_config(preset)
        assert cfg.extend.training.min_lr_ratio == 0.1, preset
        assert cfg.training.min_lr_ratio == 0.0, preset
