"""``model.device``: ``cpu`` and ``auto`` (falling back to the CPU, said once) give bit for bit what the device-less
calls gave; ``cuda`` without a device is an error; a checkpoint holds CPU tensors only. The ``gpu`` test runs the
tiny rollout and update on CUDA and checks them against the CPU (skipped, saying why, where torch sees no CUDA
device; ``benchmarks/gpu_check.sh`` runs it on a lent GPU machine)."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import mel.models
from mel.config import AlgorithmConfig, OptimizerConfig
from mel.engines import make_engine
from mel.engines.hf import TransformersEngine
from mel.models import CPU_FALLBACK_MESSAGE, load_model_and_tokenizer, resolve_device
from mel.update import (
    OPTIMIZER_FILE,
    ExperienceBatch,
    UpdateBatch,
    load_optimizer_state,
    make_optimizer,
    pad_batch,
    policy_update,
    save_checkpoint,
    token_logprobs,
)

PROMPTS = ["Write add(a, b).", "Say hello in one longer sentence please."]
# A reference model (KL), two optimizer steps (pi_old's log-probs), micro-batches, an experience (the NLL term).
ALGO = AlgorithmConfig(kl_coef=0.05, mini_batch_size=4, micro_batch_size=3)
OPT = OptimizerConfig(lr=1e-3)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whose fallback has not been said yet in this process."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mel.models, "_said_cpu_fallback", False)


def _experiences(tok) -> ExperienceBatch:
    context = tok.apply_chat_template([{"role": "user", "content": "Why did add fail?"}], add_generation_prompt=True,
                                      tokenize=False)
    return ExperienceBatch([tok.encode(context, add_special_tokens=False)],
                           [tok.encode("Return a + b.", add_special_tokens=False) + [tok.eos_token_id]])


def _rollout(engine):
    return engine.generate(PROMPTS, n=4, temperature=1.0, max_tokens=8, seed=3)


def _batch(results) -> UpdateBatch:
    flat = [(g, r.prompt_token_ids, s) for g, r in enumerate(results) for s in r.samples]
    return UpdateBatch([p for _, p, _ in flat], [s.token_ids for *_, s in flat],
                       [float(k % 2) for k in range(len(flat))], [g for g, *_ in flat])


def _update(model, ref_model, tok, batch):
    optimizer = make_optimizer(model, OPT)
    torch.manual_seed(0)
    stats = policy_update(model, optimizer, batch, ALGO, OPT, pad_id=tok.pad_token_id, temperature=1.0, max_len=8,
                          seed=0, ref_model=ref_model, experiences=_experiences(tok), nll_coef=0.1)
    return stats, optimizer


def _step(path: str, device: str | None):
    """A rollout and an update of the tiny model as the stages build them; ``device=None``: the calls of before."""
    kw = {} if device is None else {"device": device}
    results = _rollout(make_engine("transformers", path, batch_size=8, **kw))
    model, tok = load_model_and_tokenizer(path, "float32", **kw)
    ref_model, _ = load_model_and_tokenizer(path, "float32", **kw)
    stats, _ = _update(model, ref_model, tok, _batch(results))
    stats = dataclasses.replace(stats, train_tokens_per_s=0.0)  # a rate of wall time
    samples = [(s.token_ids, s.logprobs) for r in results for s in r.samples]
    return samples, stats, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_cpu_and_auto_fallback_give_the_same_step_as_before(tiny_model_path, no_cuda, capfd):
    before = _step(tiny_model_path, None)
    assert CPU_FALLBACK_MESSAGE not in capfd.readouterr().err  # the device-less calls stay silent
    cpu = _step(tiny_model_path, "cpu")
    assert CPU_FALLBACK_MESSAGE not in capfd.readouterr().err  # cpu asked for is no fallback
    auto = _step(tiny_model_path, "auto")
    assert capfd.readouterr().err.count(CPU_FALLBACK_MESSAGE) == 1  # three loads, said once
    for got in (cpu, auto):
        assert got[0] == before[0]  # sampled tokens and their log-probs
        assert got[1] == before[1]  # every metric, exactly
        assert all(torch.equal(got[2][n], p) for n, p in before[2].items())  # every parameter, exactly
    assert before[1].kl > 0 and before[1].nll_loss > 0 and before[1].grad_norm > 0


def test_auto_says_the_fallback_once(no_cuda, capfd):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert capfd.readouterr().err.splitlines() == [CPU_FALLBACK_MESSAGE]
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_a_cuda_device_says_what_to_set(no_cuda):
    with pytest.raises(RuntimeError, match="model.device=cuda.*set model.device=auto"):
        resolve_device("cuda")


def test_a_checkpoint_holds_cpu_tensors_and_resumes(tiny_model, tmp_path):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    batch = UpdateBatch([[1, 2, 3]] * 2, [[4, 5], [6]], [1.0, 0.0], [0, 0])
    algo = AlgorithmConfig(mini_batch_size=2, micro_batch_size=2)
    optimizer = make_optimizer(model, OPT)
    policy_update(model, optimizer, batch, algo, OPT, pad_id=tok.pad_token_id, temperature=1.0, max_len=2, seed=0)
    save_checkpoint(model, tok, optimizer, tmp_path)
    _assert_cpu_checkpoint(model, optimizer, tmp_path)


def _assert_cpu_checkpoint(model, optimizer, folder) -> None:
    """The checkpoint in ``folder`` loads on the CPU with ``model``'s exact weights and ``optimizer``'s exact state,
    and its optimizer file holds CPU tensors only (read back without ``map_location``)."""
    raw = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
    tensors = [v for state in raw["state"].values() for v in state.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    cpu_model, _ = load_model_and_tokenizer(str(folder), "float32", "cpu")
    trained = model.state_dict()
    assert all(torch.equal(v, trained[k].cpu()) for k, v in cpu_model.state_dict().items())
    cpu_optimizer = make_optimizer(cpu_model, OPT)
    assert load_optimizer_state(cpu_optimizer, folder)
    expected = optimizer.state_dict()["state"]
    for index, state in cpu_optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert value.device.type == "cpu" and torch.equal(value, expected[index][key].cpu()), (index, key)


@pytest.mark.gpu
def test_tiny_rollout_and_update_on_cuda_match_the_cpu(tiny_model_path, tmp_path):
    """On CUDA: the engine samples on the device with log-probs the CPU model gives the same tokens; one update from
    the same batch gives the CPU's metrics (to float tolerance); the checkpoint loads on the CPU."""
    engine = make_engine("transformers", tiny_model_path, batch_size=8, device="cuda")
    assert engine.model.device.type == "cuda"
    results = _rollout(engine)
    del engine
    batch = _batch(results)
    cpu_model, tok = load_model_and_tokenizer(tiny_model_path, "float32", "cpu")
    ids, att, pos, mask = pad_batch(batch.prompt_ids, batch.completion_ids, tok.pad_token_id)
    with torch.no_grad():
        forced, _ = token_logprobs(cpu_model, ids, att, pos, mask.shape[1])  # [N, Lc]
    sampled = [s.logprobs for r in results for s in r.samples]
    for i, lps in enumerate(sampled):
        assert torch.allclose(forced[i, mask.shape[1] - len(lps):], torch.tensor(lps), atol=1e-3), i

    stats = {}
    for device in ("cpu", "cuda"):
        model, _ = load_model_and_tokenizer(tiny_model_path, "float32", device)
        ref_model, _ = load_model_and_tokenizer(tiny_model_path, "float32", device)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stats[device], optimizer = _update(model, ref_model, tok, batch)
        assert all(p.device.type == device for p in model.parameters())
        assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    for key in ("loss", "pg_loss", "kl", "clip_frac", "entropy", "grad_norm", "nll_loss", "grad_norm_nll"):
        # loose enough for the second step, which starts from weights that AdamW's first (sign-like) step moved
        # apart where a gradient is near 0; a device bug (a mask, a position, a stray CPU tensor) is far off
        assert math.isclose(getattr(stats["cuda"], key), getattr(stats["cpu"], key), rel_tol=1e-2, abs_tol=1e-4), key
    save_checkpoint(model, tok, optimizer, tmp_path)  # the CUDA model's
    _assert_cpu_checkpoint(model, optimizer, tmp_path)
    assert TransformersEngine(str(tmp_path), batch_size=2).generate(PROMPTS, n=1, temperature=0.0, max_tokens=4,
                                                                    seed=0)
