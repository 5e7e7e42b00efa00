"""A learning test: GRPO on a trivially learnable verifiable task makes the tiny random model earn more reward.

Task: every prompt asks for a reply starting with a vowel; the ``regex`` verifier passes a completion whose stripped
text starts with one (about a quarter of random tokens do). The loop is the real one (transformers engine, verifier
registry, ``policy_update``), without the orchestration, on CPU in well under two minutes.
"""
from __future__ import annotations

import copy

import torch

from mel.config import AlgorithmConfig, OptimizerConfig
from mel.data import Problem
from mel.engines.hf import TransformersEngine
from mel.update import UpdateBatch, make_optimizer, policy_update
from mel.verify import verify_problems

STEPS = 30  # 15 until the tiny model's heads became 32 wide (vLLM's CPU attention), 20 until the sampler drew each
# token by inverse CDF (the same distribution, other draws): then the last three steps' mean was +0.05 above the
# first three's after 20 steps, +0.22 after 25, more than +0.25 after 30


def test_reward_rises_and_every_parameter_changes(tiny_model, tiny_model_path):
    torch.manual_seed(0)
    model, tok = tiny_model
    model = copy.deepcopy(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    problems = [Problem(problem_id=f"vowel/{i}", kind="regex", answer=r"^[AaEeIiOoUu]",
                        prompt=f"Reply with a word that starts with a vowel. (#{i})") for i in range(16)]
    engine = TransformersEngine(tiny_model_path, model=model, tokenizer=tok, batch_size=64)
    algo = AlgorithmConfig(mini_batch_size=64, micro_batch_size=64)
    opt_cfg = OptimizerConfig(lr=2e-2)
    optimizer = make_optimizer(model, opt_cfg)
    rewards_per_step = []
    for step in range(STEPS):
        batch_problems = [problems[(step * 8 + i) % len(problems)] for i in range(8)]
        results = engine.generate([p.prompt for p in batch_problems], n=8, temperature=1.0, max_tokens=3, seed=step)
        flat = [(g, p, r.prompt_token_ids, s) for g, (p, r) in enumerate(zip(batch_problems, results))
                for s in r.samples]
        verdicts = verify_problems([p for _, p, _, _ in flat], [s.text for *_, s in flat],
                                   timeout_s=5, memory_mb=256, workers=1)
        rewards = [v.reward for v in verdicts]
        rewards_per_step.append(sum(rewards) / len(rewards))
        policy_update(model, optimizer,
                      UpdateBatch([pi for _, _, pi, _ in flat], [s.token_ids for *_, s in flat], rewards,
                                  [g for g, *_ in flat]),
                      algo, opt_cfg, pad_id=tok.pad_token_id, temperature=1.0, max_len=3, seed=step)
    first, last = sum(rewards_per_step[:3]) / 3, sum(rewards_per_step[-3:]) / 3
    assert last > first + 0.25, f"reward per step: {[round(r, 3) for r in rewards_per_step]}"
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, f"parameters that never moved: {unchanged}"
