"""The policy update on a real (tiny) model: sampling log-probs agree with training log-probs, micro-batching does
not change the gradient, and the update moves the policy the way the advantages say."""
from __future__ import annotations

import copy

import pytest
import torch

from mel.config import AlgorithmConfig, OptimizerConfig
from mel.engines.hf import TransformersEngine
from mel.update import UpdateBatch, make_optimizer, pad_batch, policy_update, token_logprobs


def _samples(model, tok, path, n=4, max_tokens=12):
    engine = TransformersEngine(path, model=model, tokenizer=tok, batch_size=16)
    results = engine.generate(["Write add(a, b).", "Say hello in one longer sentence please."], n=n,
                              temperature=1.0, max_tokens=max_tokens, seed=3)
    prompts, completions, logprobs = [], [], []
    for r in results:
        for s in r.samples:
            prompts.append(r.prompt_token_ids)
            completions.append(s.token_ids)
            logprobs.append(s.logprobs)
    return prompts, completions, logprobs


def test_engine_is_deterministic_for_a_seed(tiny_model, tiny_model_path):
    model, tok = tiny_model
    a = _samples(model, tok, tiny_model_path)
    b = _samples(model, tok, tiny_model_path)
    assert a[1] == b[1]


def test_training_logprobs_match_sampling_logprobs(tiny_model, tiny_model_path):
    """Left padding, position ids and the completion window of the trainer reproduce what the sampler saw."""
    model, tok = tiny_model
    prompts, completions, sampled = _samples(model, tok, tiny_model_path)
    assert len({len(p) for p in prompts}) == 2  # prompts of different lengths exercise the padding
    ids, att, pos, mask = pad_batch(prompts, completions, tok.pad_token_id)
    with torch.no_grad():
        lp, _ = token_logprobs(model, ids, att, pos, mask.shape[1])
    for i, s in enumerate(sampled):
        recomputed = lp[i, mask.shape[1] - len(s):]
        assert torch.allclose(recomputed, torch.tensor(s), atol=2e-4), i


def _grads(model, batch, algo, tok):
    model = copy.deepcopy(model)
    opt_cfg = OptimizerConfig(lr=1e-3, grad_clip=0.0)
    optimizer = make_optimizer(model, opt_cfg)
    captured = {}
    original_step = optimizer.step

    def capture_step(*args, **kwargs):
        captured.update({n: p.grad.clone() for n, p in model.named_parameters()})
        return original_step(*args, **kwargs)

    optimizer.step = capture_step
    policy_update(model, optimizer, batch, algo, opt_cfg, pad_id=tok.pad_token_id, temperature=1.0, max_len=12, seed=0)
    return captured


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batching_leaves_the_gradient_unchanged(tiny_model, tiny_model_path, mode):
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, rewards=[1, 0, 0, 1, 0, 0, 0, 1], group_ids=[0] * 4 + [1] * 4)
    whole = _grads(model, batch, AlgorithmConfig(loss_agg=mode, mini_batch_size=8, micro_batch_size=8), tok)
    split = _grads(model, batch, AlgorithmConfig(loss_agg=mode, mini_batch_size=8, micro_batch_size=3), tok)
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.allclose(whole[name], split[name], atol=1e-6, rtol=1e-4), name
    assert any(g.abs().sum() > 0 for g in whole.values())


def test_update_raises_logprob_of_positive_samples(tiny_model, tiny_model_path):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    rewards = [1, 0, 0, 0, 0, 0, 0, 1]
    ids, att, pos, mask = pad_batch(prompts, completions, tok.pad_token_id)

    def seq_logprob():
        with torch.no_grad():
            lp, _ = token_logprobs(model, ids, att, pos, mask.shape[1])
        return (lp * mask).sum(-1)

    before = seq_logprob()
    opt_cfg = OptimizerConfig(lr=1e-3)
    algo = AlgorithmConfig(epochs=2, mini_batch_size=4, micro_batch_size=2)  # several steps: exercises pi_old
    stats = policy_update(model, make_optimizer(model, opt_cfg), UpdateBatch(prompts, completions, rewards,
                          [0] * 4 + [1] * 4), algo, opt_cfg, pad_id=tok.pad_token_id, temperature=1.0,
                          max_len=12, seed=0)
    delta = seq_logprob() - before
    assert delta[0] > 0 and delta[7] > 0  # the passing samples became more likely
    assert delta[1:4].mean() < 0  # the failing ones of the first group less likely
    assert stats["grad_norm"] > 0 and 0 <= stats["clip_frac"] <= 1
