"""Rollout speed of the transformers engine's sampling loop (`mel.engines.decode`) against ``model.generate`` (the
loop the engine used before: every row decodes until the longest one ends, each prompt prefilled once per sample,
every step's full logits kept), side by side in one process on the same prompts, interleaved.

    python benchmarks/engine_speed.py                        # the demo model: 4 easy_code prompts x 8 samples, 128 tokens
    python benchmarks/engine_speed.py --prompts 8 --n 8 --repeats 3 --temperature 0.6
    python benchmarks/engine_speed.py --model tiny-random    # seconds, a smoke test

Prints each loop's seconds and tokens per second (median over ``--repeats``) and the ratio. Both loops sample with the
same seed but not the same random draws, so their token counts differ; tokens per second is the fair figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def generate_loop(engine, prompts, temperature, max_tokens, seed):
    """The reference: ``model.generate`` over the left-padded batch, as the engine called it before."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    sampling = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature,
                                                              "top_p": 1.0, "top_k": 0}
    with torch.no_grad():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, **sampling, max_new_tokens=max_tokens,
                                    eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.pad_id,
                                    output_logits=True, return_dict_in_generate=True)
        logits = torch.stack(out.logits, dim=1).float()
        torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    rows = out.sequences[:, width:].tolist()
    return sum(next((i + 1 for i, t in enumerate(r) if t in engine.stop_ids), len(r)) for r in rows)


def decode_loop(engine, prompts, temperature, max_tokens, seed):
    from mel.engines.decode import decode

    done = decode(engine.model, prompts, temperature=temperature, max_tokens=max_tokens, seed=seed,
                  stop_ids=engine.stop_ids, pad_id=engine.pad_id)
    return sum(len(d.token_ids) for d in done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model.source")
    ap.add_argument("--prompts", type=int, default=4, help="easy_code prompts (the demo's prompts_per_step)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (the demo's group_size)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from mel.config import ModelConfig
    from mel.data.easy_code import easy_code_problems
    from mel.engines.hf import TransformersEngine
    from mel.models import resolve_model

    torch.set_num_threads(args.threads)
    engine = TransformersEngine(resolve_model(ModelConfig(source=args.model)), batch_size=args.prompts * args.n)
    prompts = [engine.encode_prompt(p.prompt) for p in easy_code_problems()[:args.prompts] for _ in range(args.n)]
    loops = {"model.generate": generate_loop, "mel.engines.decode": decode_loop}
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(args.repeats):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            tokens = loop(engine, prompts, args.temperature, args.max_tokens, seed=r)
            dt = time.perf_counter() - t0
            seconds[name].append(dt)
            rates[name].append(tokens / dt)
            print(f"  repeat {r + 1} {name:<20} {dt:6.1f} s  {tokens:5d} tokens  {tokens / dt:6.1f} tok/s", flush=True)
    print(f"{args.model}, {args.prompts} prompts x {args.n} samples, <= {args.max_tokens} tokens, "
          f"T={args.temperature}, {args.threads} threads (median of {args.repeats}):")
    for name in loops:
        print(f"  {name:<20} {statistics.median(seconds[name]):6.1f} s  {statistics.median(rates[name]):6.1f} tok/s")
    ratio = statistics.median(rates["mel.engines.decode"]) / statistics.median(rates["model.generate"])
    print(f"  tokens/s ratio (decode / generate): {ratio:.2f}x")


if __name__ == "__main__":
    main()
