"""Local answer generation: middle truncation, answer prefixes, prefix caching vs batching."""

import pytest

from longalign.scoring.answerer import Answerer, TransformersAnswerer
from longalign.scoring.chat import encode, middle_truncate, render


def test_middle_truncate_keeps_head_and_tail():
    ids = list(range(100))
    assert middle_truncate(ids, 200) == ids
    cut = middle_truncate(ids, 11)
    assert cut == list(range(5)) + list(range(94, 100))
    assert len(middle_truncate(ids, 10)) == 10
    with pytest.raises(ValueError):
        middle_truncate(ids, 0)


@pytest.fixture(scope="module")
def tiny():
    from longalign.models import load_model, load_tokenizer

    return load_model("embedded:tiny"), load_tokenizer("embedded:tiny")


def test_answer_prefix_is_continued(tiny):
    _, tokenizer = tiny
    chat = [{"role": "user", "content": "What is it?"}]
    open_prompt = render(tokenizer, chat)
    prefixed = render(tokenizer, chat + [{"role": "assistant", "content": "It is"}])
    assert prefixed == open_prompt + "It is"


def _prompts(n):
    """Prompts that share long openings (as the haystack tasks do) and differ in length."""
    return [[{"role": "user", "content": "word " * (40 + 37 * (i % 3)) + f"question {i}?" + " tail" * i}]
            for i in range(n)]


def test_prefix_cache_matches_batched_generation(tiny):
    model, tokenizer = tiny
    prompts = _prompts(6)[::-1]
    cached = TransformersAnswerer(model, tokenizer, 6)
    batched = TransformersAnswerer(model, tokenizer, 6, prefix_cache=False, batch_tokens=4096)
    single = TransformersAnswerer(model, tokenizer, 6, prefix_cache=False, batch_tokens=1)
    assert isinstance(cached, Answerer)
    first = cached.answer(prompts)
    assert len(first) == 6 and all(isinstance(a, str) and a for a in first)
    assert cached.reused_tokens > 0  # the shared openings were computed once
    assert cached.answer(prompts) == first  # deterministic
    assert batched.answer(prompts) == first
    assert len(batched._batches(batched.prompt_tokens)) == 1
    assert single.answer(prompts) == first
    assert cached.prompt_tokens == [len(encode(tokenizer, p)) for p in prompts]
    assert cached.truncated == 0


def test_long_prompts_are_middle_truncated(tiny):
    model, tokenizer = tiny
    answerer = TransformersAnswerer(model, tokenizer, 4, context=64)
    prompts = _prompts(3)
    answers = answerer.answer(prompts)
    assert len(answers) == 3
    assert answerer.limit == 60
    assert max(answerer.prompt_tokens) == 60
    assert answerer.truncated == sum(len(encode(tokenizer, p)) > 60 for p in prompts) > 0


def test_prefill_reusing_a_prefix_equals_a_fresh_prefill(tiny):
    import torch

    model, tokenizer = tiny
    answerer = TransformersAnswerer(model, tokenizer, 4)
    a, b = (encode(tokenizer, p) for p in _prompts(2))
    kv_a, _, _ = answerer._prefill(a, [], [])
    kv_reused, first_reused, keep = answerer._prefill(b, a, kv_a)
    kv_fresh, first_fresh, none = answerer._prefill(b, [], [])
    assert none == 0 and 40 < keep < len(b)
    assert first_reused == first_fresh
    for (k1, v1), (k2, v2) in zip(kv_reused, kv_fresh):
        assert k1.shape == k2.shape == (1, k1.shape[1], len(b), k1.shape[3])
        assert torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)


@pytest.mark.slow
def test_prefix_cache_matches_generate_on_smollm2():
    """A real instruct model on real cases: the cached/batched schedule answers like generate()."""
    from longalign.config import ScoringConfig
    from longalign.models import load_model, load_tokenizer
    from longalign.scoring.haystack import load_source
    from longalign.scoring.stage import build_cases

    model, tokenizer = load_model("embedded:smollm2"), load_tokenizer("embedded:smollm2")
    cases = build_cases(ScoringConfig(lengths=[384, 640], depths=[0.2, 0.8], recall_samples=2,
                                      needle_lengths=[512], needle_depths=[0.5]),
                        tokenizer, load_source(None, 640))
    prompts = [c.messages for c in cases]
    cached = TransformersAnswerer(model, tokenizer, 12)
    plain = TransformersAnswerer(model, tokenizer, 12, prefix_cache=False, batch_tokens=1)
    assert cached.answer(prompts) == plain.answer(prompts)
    assert cached.reused_tokens > 0.3 * sum(cached.prompt_tokens)


def test_sampled_answers_are_seeded(tiny):
    """LongBench-Chat samples its answers: the same seed gives the same answers, the budget is kept."""
    model, tokenizer = tiny
    prompts = _prompts(3)
    greedy = TransformersAnswerer(model, tokenizer, 6)
    sampled = greedy.with_generation(12, 1.0, seed=5)
    assert (sampled.max_new_tokens, sampled.temperature, greedy.temperature) == (12, 1.0, 0.0)
    first = sampled.answer(prompts)
    assert sampled.answer(prompts) == first
    other = greedy.with_generation(12, 1.0, seed=6).answer(prompts)
    assert other != first  # a random tiny model's samples differ between seeds
    assert first != greedy.with_budget(12).answer(prompts)  # and differ from greedy decoding


@pytest.mark.parametrize("native, dtype", [(True, "bfloat16"), (False, "float32")])
def test_cpu_bf16_answerer_loads_bf16_weights_only_on_a_native_cpu(cpu_has, native, dtype):
    from longalign.config import ScoringConfig
    from longalign.models import load_tokenizer
    from longalign.scoring.stage import _answerer

    cpu_has(avx512_bf16=native)
    tokenizer = load_tokenizer("embedded:tiny")
    answerer = _answerer(ScoringConfig(cpu_bf16=True), "model", "embedded:tiny", tokenizer)
    assert str(answerer.model.dtype) == f"torch.{dtype}"
    [answer] = answerer.answer([[{"role": "user", "content": "Say something."}]])
    assert isinstance(answer, str)
