"""The policy update on a real (tiny) model: sampling log-probs agree with training log-probs, micro-batching does
not change the gradient, the update moves the policy the way the advantages say, each base algorithm's gradient is
the one its formula gives, and the meta-experience NLL term adds exactly the gradient of MEL's token-mean NLL."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from mel.config import AlgorithmConfig, OptimizerConfig
from mel.engines.hf import TransformersEngine
from mel.update import ExperienceBatch, UpdateBatch, make_optimizer, pad_batch, policy_update, token_logprobs


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


def _run(model, batch, algo, tok, lr=1e-3, temperature=1.0, **kwargs):
    """Gradients at the (last) optimizer step, the stats, and the updated model, of one ``policy_update`` on a copy."""
    model = copy.deepcopy(model)
    opt_cfg = OptimizerConfig(lr=lr or 1e-3, grad_clip=0.0)
    optimizer = make_optimizer(model, opt_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr  # lr = 0 (not a valid config) keeps the model fixed across several optimizer steps
    captured = {}
    original_step = optimizer.step

    def capture_step(*args, **kw):
        captured.update({n: p.grad.clone() for n, p in model.named_parameters()})
        return original_step(*args, **kw)

    optimizer.step = capture_step
    stats = policy_update(model, optimizer, batch, algo, opt_cfg, pad_id=tok.pad_token_id, temperature=temperature,
                          max_len=12, seed=0, **kwargs)
    return captured, stats, model


def _grads(model, batch, algo, tok, **kwargs):
    return _run(model, batch, algo, tok, **kwargs)[0]


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
    assert stats.grad_norm > 0 and 0 <= stats.clip_frac <= 1


# --- base algorithms and the meta-experience NLL term ---------------------------------------------------------------

EXPERIENCE_TEXTS = [
    ("Why did add(a, b) fail?", "Return a + b, not a - b."),
    ("Review the failing greeting.", "Say hello first; keep it short and polite, then stop."),
    ("What went wrong?", "Off by one."),
]


def _experiences(tok, texts=EXPERIENCE_TEXTS) -> ExperienceBatch:
    """Retrospective contexts (chat-formatted, ending with the assistant header) and meta-experience tokens."""
    contexts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True,
                                                   tokenize=False), add_special_tokens=False) for c, _ in texts]
    targets = [tok.encode(m, add_special_tokens=False) for _, m in texts]
    return ExperienceBatch(contexts, targets)


def _direct_grads(model, contexts, targets, weights):
    """Gradient and value of ``-sum_k weights[k] * sum_t log pi(target_k,t | context_k, target_k,<t)``, computed one
    unpadded sequence at a time straight from the model's logits (no pad_batch, no logits_to_keep)."""
    model = copy.deepcopy(model)
    model.train()
    total = 0.0
    for ctx, tgt, w in zip(contexts, targets, weights):
        ids = torch.tensor([list(ctx) + list(tgt)])  # [1, S]
        logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float()  # [T, V] position t predicts t+1
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tgt).unsqueeze(-1)).squeeze(-1)  # [T]
        loss = -w * lp.sum()
        loss.backward()
        total += float(loss.detach())
    return {n: p.grad.clone() for n, p in model.named_parameters()}, total


def _token_mean_nll_grads(model, exps: ExperienceBatch, rows=None):
    """MEL's L_NLL over experiences ``rows``: mean over experiences of each one's token-mean NLL."""
    rows = range(len(exps.target_ids)) if rows is None else rows
    ctx, tgt = [exps.context_ids[k] for k in rows], [exps.target_ids[k] for k in rows]
    return _direct_grads(model, ctx, tgt, [1.0 / (len(rows) * len(t)) for t in tgt])


def _norm(grads) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))


def _assert_same_grads(got, expected, atol=1e-6, rtol=1e-4):
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=atol, rtol=rtol), name


def test_unknown_algorithm_name_lists_known_ones(tiny_model):
    model, tok = tiny_model
    batch = UpdateBatch([[1, 2]], [[3]], [1.0], [0])
    with pytest.raises(KeyError, match="known: grpo, reinforce_pp, rft"):
        policy_update(model, None, batch, AlgorithmConfig(name="ppo"), OptimizerConfig(), pad_id=0,
                      temperature=1.0, max_len=4, seed=0)


def test_no_experiences_means_no_nll_term_and_lambda_zero_changes_nothing(tiny_model, tiny_model_path):
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, [1, 0, 0, 1, 0, 0, 0, 1], [0] * 4 + [1] * 4)
    algo = AlgorithmConfig(epochs=2, mini_batch_size=4, micro_batch_size=3)
    exps = _experiences(tok)
    plain_grads, plain, plain_model = _run(model, batch, algo, tok)
    assert plain.nll_loss == 0.0 and plain.nll_coef == 0.0 and plain.grad_norm_nll == 0.0
    assert plain.num_experiences == 0 and plain.experience_tokens == 0 and plain.num_kept_samples == 8
    assert plain.grad_norm_rl == plain.grad_norm > 0
    empty_grads, empty, _ = _run(model, batch, algo, tok, experiences=ExperienceBatch([], []), nll_coef=1.0)
    assert empty.nll_loss == 0.0 and empty.num_experiences == 0
    # lambda = 0: the NLL term is computed (and reported) but the update is bit-identical to plain RL
    zero_grads, zero, zero_model = _run(model, batch, algo, tok, experiences=exps, nll_coef=0.0)
    assert zero.nll_loss > 0 and zero.grad_norm_nll > 0 and zero.nll_coef == 0.0
    assert zero.num_experiences == 3 and zero.experience_tokens == sum(len(t) for t in exps.target_ids)
    for name, p in plain_model.named_parameters():
        assert torch.equal(p, dict(zero_model.named_parameters())[name]), name
    for grads in (empty_grads, zero_grads):
        assert all(torch.equal(grads[n], plain_grads[n]) for n in plain_grads)
    assert zero.loss == plain.loss and zero.grad_norm == plain.grad_norm


@pytest.mark.parametrize("algo_name,rewards", [("grpo", [1.0] * 8), ("rft", [0.0] * 8), ("reinforce_pp", [0.5] * 8)])
def test_nll_gradient_is_the_token_mean_nll_gradient(tiny_model, tiny_model_path, algo_name, rewards):
    """With no RL signal (all advantages 0, or RFT with nothing passing) the step's gradient is lambda * grad L_NLL,
    L_NLL the mean over experiences of each one's token-mean NLL, computed here straight from the model at
    temperature 1 (the rollouts' temperature applies to the RL term only)."""
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    exps = _experiences(tok)
    batch = UpdateBatch(prompts, completions, rewards, [0] * 4 + [1] * 4)
    algo = AlgorithmConfig(name=algo_name, mini_batch_size=8, micro_batch_size=8)
    grads, stats, _ = _run(model, batch, algo, tok, temperature=0.7, experiences=exps, nll_coef=1.0)
    expected, expected_loss = _token_mean_nll_grads(model, exps)
    _assert_same_grads(grads, expected)
    assert stats.nll_loss == pytest.approx(expected_loss, rel=1e-5)
    assert stats.grad_norm_nll == pytest.approx(_norm(expected), rel=1e-4)
    assert stats.grad_norm_rl == 0.0 and stats.nll_coef == 1.0
    assert stats.num_kept_samples == (0 if algo_name == "rft" else 8)
    # lambda scales the NLL gradient
    half, _, _ = _run(model, batch, algo, tok, temperature=0.7, experiences=exps, nll_coef=0.5)
    _assert_same_grads(half, {n: 0.5 * g for n, g in expected.items()})


def test_micro_batching_of_experiences_leaves_the_gradient_unchanged(tiny_model, tiny_model_path):
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, [1, 0, 0, 1, 0, 0, 0, 1], [0] * 4 + [1] * 4)
    exps = _experiences(tok)
    whole, whole_stats, _ = _run(model, batch, AlgorithmConfig(mini_batch_size=8, micro_batch_size=8), tok,
                                 experiences=exps, nll_coef=0.5)
    split, split_stats, _ = _run(model, batch, AlgorithmConfig(mini_batch_size=8, micro_batch_size=1), tok,
                                 experiences=exps, nll_coef=0.5)
    _assert_same_grads(split, whole)
    assert split_stats.nll_loss == pytest.approx(whole_stats.nll_loss, rel=1e-6)
    rl_only = _grads(model, batch, AlgorithmConfig(mini_batch_size=8, micro_batch_size=8), tok)
    assert any(not torch.allclose(whole[n], rl_only[n], atol=1e-6, rtol=1e-4) for n in whole)  # the NLL term counts


def test_calibrated_coef_sets_the_gradient_norm_ratio(tiny_model, tiny_model_path):
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, [1, 0, 0, 1, 0, 0, 0, 1], [0] * 4 + [1] * 4)
    algo = AlgorithmConfig(mini_batch_size=8, micro_batch_size=4)
    exps, ratio = _experiences(tok), 0.3
    grads, stats, _ = _run(model, batch, algo, tok, experiences=exps, nll_coef=0.004, nll_coef_mode="calibrated",
                           nll_grad_ratio=ratio)
    assert stats.nll_coef * stats.grad_norm_nll == pytest.approx(ratio * stats.grad_norm_rl, rel=1e-4)
    assert stats.nll_coef != 0.004
    # the step's gradient really is g_RL + lambda * g_NLL with ||lambda * g_NLL|| = ratio * ||g_RL||
    rl_grads = _grads(model, batch, algo, tok)
    nll_grads, _ = _token_mean_nll_grads(model, exps)
    assert _norm(rl_grads) == pytest.approx(stats.grad_norm_rl, rel=1e-5)
    assert _norm({n: grads[n] - rl_grads[n] for n in grads}) == pytest.approx(ratio * _norm(rl_grads), rel=1e-4)
    _assert_same_grads(grads, {n: rl_grads[n] + stats.nll_coef * nll_grads[n] for n in grads})
    # no RL gradient (all advantages 0): lambda falls back to nll_coef
    flat = UpdateBatch(prompts, completions, [1.0] * 8, [0] * 4 + [1] * 4)
    _, fallback, _ = _run(model, flat, algo, tok, experiences=exps, nll_coef=0.004, nll_coef_mode="calibrated")
    assert fallback.nll_coef == 0.004
    assert stats.nll_rl_grad_ratio == pytest.approx(ratio, rel=1e-4)  # what calibration set, measured
    assert fallback.nll_rl_grad_ratio is None  # no RL gradient: no ratio to report


def test_the_nll_to_rl_gradient_norm_ratio_is_measured_for_a_fixed_lambda(tiny_model, tiny_model_path):
    """||lambda * g_NLL|| / ||g_RL||, from gradients computed here apart from the update."""
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, [1, 0, 0, 1, 0, 0, 0, 1], [0] * 4 + [1] * 4)
    algo = AlgorithmConfig(mini_batch_size=8, micro_batch_size=4)
    exps = _experiences(tok)
    _, stats, _ = _run(model, batch, algo, tok, experiences=exps, nll_coef=0.004)
    rl_grads = _grads(model, batch, algo, tok)
    nll_grads, _ = _token_mean_nll_grads(model, exps)
    assert stats.nll_rl_grad_ratio == pytest.approx(0.004 * _norm(nll_grads) / _norm(rl_grads), rel=1e-4)
    _, plain, _ = _run(model, batch, algo, tok)
    assert plain.nll_rl_grad_ratio is None  # no meta-experience, no NLL gradient


def test_experiences_are_dealt_round_robin_over_mini_batches(tiny_model, tiny_model_path):
    """Two mini-batches, three experiences: step 1 gets experiences 0 and 2, step 2 gets experience 1. With lr = 0
    both steps see the initial model, so the per-step L_NLL and gradient norms can be computed directly."""
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, [1, 0, 0, 1, 0, 0, 0, 1], [0] * 4 + [1] * 4)
    exps = _experiences(tok)
    _, stats, _ = _run(model, batch, AlgorithmConfig(mini_batch_size=4, micro_batch_size=2), tok, lr=0.0,
                       experiences=exps, nll_coef=1.0)
    g02, l02 = _token_mean_nll_grads(model, exps, [0, 2])
    g1, l1 = _token_mean_nll_grads(model, exps, [1])
    assert stats.nll_loss == pytest.approx((l02 + l1) / 2, rel=1e-5)
    assert stats.grad_norm_nll == pytest.approx((_norm(g02) + _norm(g1)) / 2, rel=1e-4)
    _, pooled = _token_mean_nll_grads(model, exps)
    assert abs((l02 + l1) / 2 - pooled) > 1e-3  # the check tells the two apart


def test_rft_gradient_is_the_token_mean_nll_of_the_passing_samples(tiny_model, tiny_model_path):
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    rewards = [1, 0, 0, 1, 0, 0, 0, 1]
    batch = UpdateBatch(prompts, completions, rewards, [0] * 4 + [1] * 4)
    grads, stats, _ = _run(model, batch, AlgorithmConfig(name="rft", mini_batch_size=8, micro_batch_size=2), tok)
    kept = [i for i, r in enumerate(rewards) if r > 0]
    kept_tokens = sum(len(completions[i]) for i in kept)
    expected, expected_loss = _direct_grads(model, [prompts[i] for i in kept], [completions[i] for i in kept],
                                            [1.0 / kept_tokens] * len(kept))
    _assert_same_grads(grads, expected)
    assert stats.num_kept_samples == 3 and stats.clip_frac == 0.0
    assert stats.pg_loss == pytest.approx(expected_loss, rel=1e-5)


def test_reinforce_pp_gradient_uses_batch_normalized_advantages(tiny_model, tiny_model_path):
    """One optimizer step at ratio 1: grad = -sum_i A_i sum_t grad log pi / (number of tokens), A whitened over the
    whole batch (groups ignored), not per group as in GRPO."""
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    rewards = [1, 0, 0, 0, 1, 1, 1, 0]
    batch = UpdateBatch(prompts, completions, rewards, [0] * 4 + [1] * 4)
    grads = _grads(model, batch, AlgorithmConfig(name="reinforce_pp", mini_batch_size=8, micro_batch_size=3), tok)
    mean = sum(rewards) / 8
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 7)
    adv = [(r - mean) / (std + 1e-6) for r in rewards]
    tokens = sum(len(c) for c in completions)
    expected, _ = _direct_grads(model, prompts, completions, [a / tokens for a in adv])
    _assert_same_grads(grads, expected)
    grpo = _grads(model, batch, AlgorithmConfig(name="grpo", mini_batch_size=8, micro_batch_size=3), tok)
    assert any(not torch.allclose(grpo[n], expected[n], atol=1e-6, rtol=1e-4) for n in grpo)


def test_kl_clamp_bounds_the_kl_the_update_uses(tiny_model, tiny_model_path):
    """``algorithm.kl_clamp`` reaches the update: against a reference model that differs, the KL the update reports
    (and trains on) is at most the clamp per token; unclamped it is larger, and the gradients differ."""
    model, tok = tiny_model
    prompts, completions, _ = _samples(model, tok, tiny_model_path)
    batch = UpdateBatch(prompts, completions, rewards=[1, 0, 0, 1, 0, 0, 0, 1], group_ids=[0] * 4 + [1] * 4)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    free = _run(model, batch, AlgorithmConfig(kl_coef=0.5, mini_batch_size=8), tok, ref_model=ref)
    bound = _run(model, batch, AlgorithmConfig(kl_coef=0.5, kl_clamp=0.01, mini_batch_size=8), tok, ref_model=ref)
    assert free[1].kl > 0.01 and 0 < bound[1].kl <= 0.01 + 1e-9  # the mean over completion tokens
    assert any(not torch.allclose(free[0][n], bound[0][n]) for n in free[0])
