"""The policy update's wall time by micro-batch size, side by side on the same samples: one step of a finished run
(its rollouts and verdicts), replayed on the run's base model with each ``algorithm.micro_batch_size``, repeats
interleaved. The gradients are the same up to float rounding (the loss is a sum over micro-batches); what changes is
how many tokens each forward/backward pass carries (padding included) and how well 2 CPU cores use them.

    python benchmarks/update_cost.py RUN_DIR [--step 1] [--micro 2 4 8 16] [--repeats 2]

Prints, per micro-batch size: seconds (each repeat and the median), the tokens trained per second (padding
included; the update's ``train_tokens_per_s``) and the median's ratio to the run's own setting.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory (its config.yaml and step_NNNN/ artifacts)")
    parser.add_argument("--step", type=int, default=1, help="the step whose rollouts and verdicts are replayed")
    parser.add_argument("--micro", type=int, nargs="+", default=[2, 4, 8, 16], help="micro-batch sizes to time")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (median reported)")
    args = parser.parse_args(argv)

    import torch

    from mel import artifacts
    from mel.config import load_config
    from mel.models import load_model_and_tokenizer, resolve_model
    from mel.stages.policy import TrainerState, UpdateInputs, train_on
    from mel.update import make_optimizer

    cfg = load_config(str(Path(args.run_dir) / "config.yaml"))
    torch.set_num_threads(cfg.run.torch_threads)
    step_dir = artifacts.join(args.run_dir, f"step_{args.step:04d}")
    inputs = UpdateInputs(artifacts.join(step_dir, "rollouts.parquet"), artifacts.join(step_dir, "verdicts.parquet"))
    model, tokenizer = load_model_and_tokenizer(resolve_model(cfg.model), cfg.model.dtype, cfg.model.device)
    base = copy.deepcopy(model.state_dict())
    own = cfg.algorithm.micro_batch_size
    print(f"{args.run_dir} step {args.step}: {cfg.data.prompts_per_step} prompts x {cfg.rollout.group_size} samples, "
          f"mini-batch {cfg.algorithm.mini_batch_size}, the run's micro-batch {own}; {torch.get_num_threads()} threads")
    seconds: dict[int, list[float]] = {m: [] for m in args.micro}
    rates: dict[int, list[float]] = {m: [] for m in args.micro}
    for _ in range(args.repeats):
        for micro in args.micro:
            model.load_state_dict(base)
            run_cfg = dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, micro_batch_size=micro))
            state = TrainerState(model, tokenizer, make_optimizer(model, run_cfg.optimizer))
            t0 = time.perf_counter()
            stats = train_on(run_cfg, args.step, state, inputs)
            seconds[micro].append(time.perf_counter() - t0)
            rates[micro].append(stats.train_tokens_per_s)
    reference = statistics.median(seconds[own]) if own in seconds else None
    print(f"{'micro':>5}  {'seconds (each repeat)':<24} {'median':>7}  {'tokens/s':>8}  vs micro {own}")
    for micro in args.micro:
        med = statistics.median(seconds[micro])
        ratio = f"{med / reference:.2f}x" if reference else "-"
        each = ", ".join(f"{s:.1f}" for s in seconds[micro])
        print(f"{micro:>5}  {each:<24} {med:>7.1f}  {statistics.median(rates[micro]):>8.1f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
