"""Step cost of MEL and MEL-Code against GRPO: the wall time of one RL step of each method on the same base config,
measured side by side in one process, stage by stage (no Prefect in the loop: the stage functions the tasks wrap).

    python benchmarks/step_cost.py                                 # the demo config (SmolLM2-135M, easy code)
    python benchmarks/step_cost.py --base configs/tiny.yaml        # seconds, for a smoke test
    python benchmarks/step_cost.py --methods grpo mel_code mel self_critique --repeats 2

Every method's step starts from the same base checkpoint with the same seed, so the rollouts and verdicts are the
same work for all methods; what differs is what each method adds (pairs, building M, replay, the NLL term). With
``--repeats R`` the methods run interleaved R times and the median is reported. Prints seconds per stage, the total
and each method's ratio to GRPO (issue targets: MEL-Code <= 1.15x, MEL <= 1.5x).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

STAGES = ("rollout", "verify", "pair", "revise", "extract", "replay", "update")


def one_step(cfg, run_dir: str, checkpoint: str) -> dict[str, float]:
    """One step of ``cfg``'s stages from the stage table (`mel.stages.table.STEP`), in order, each timed."""
    from mel import artifacts, schemas
    from mel.stages.step import StepStats, run_stage, stage_inputs
    from mel.stages.table import STEP

    times: dict[str, float] = {}
    available, stats = {"checkpoint": checkpoint}, StepStats()
    for stage in STEP.enabled(cfg):
        t0 = time.perf_counter()
        result = run_stage(stage, cfg, run_dir, 0, stage_inputs(stage, available), stats)
        times[stage.name] = time.perf_counter() - t0
        available.update(result.outputs)
        stats = stats.add(stage.name, result.stats)
    times["_metrics"] = artifacts.read_table(available["metrics"], schemas.METRICS).to_pylist()[0]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(REPO / "configs" / "demo.yaml"), help="base config (default: demo)")
    parser.add_argument("--methods", nargs="+", default=["grpo", "mel_code", "mel"],
                        help="method files under configs/methods (the first is the reference; default grpo)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions (median reported)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override for every method, e.g. --set data.prompts_per_step=8")
    args = parser.parse_args()

    from mel.config import load_config
    from mel.models import resolve_model
    from mel.stages.common import set_threads

    configs = {m: load_config(str(REPO / "configs" / "methods" / f"{m}.yaml"), args.set, base=args.base)
               for m in args.methods}
    first = configs[args.methods[0]]
    set_threads(first)
    checkpoint = resolve_model(first.model)
    print(f"step cost on {args.base}: {first.model.source}, {first.data.taskset}, "
          f"{first.data.prompts_per_step} prompts x {first.rollout.group_size} samples, "
          f"{first.rollout.max_new_tokens} new tokens; {args.repeats} repeat(s)", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="mel-step-cost-") as tmp:
        for r in range(args.repeats):
            for m in args.methods:
                times = one_step(configs[m], f"{tmp}/{m}-{r}", checkpoint)
                runs[m].append(times)
                total = sum(v for k, v in times.items() if k in STAGES)
                print(f"  repeat {r + 1} {m}: {total:.1f} s", flush=True)

    def med(m: str, key: str) -> float:
        return statistics.median(t.get(key, 0.0) for t in runs[m])

    totals = {m: statistics.median(sum(v for k, v in t.items() if k in STAGES) for t in runs[m])
              for m in args.methods}
    ref = args.methods[0]
    print()
    print(f"{'method':<28}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}{'ratio':>8}  M pairs/kept/used")
    for m in args.methods:
        metrics = runs[m][-1]["_metrics"]
        mel = (f"{metrics['num_pairs']}/{metrics['num_accepted']}/{metrics['num_experiences']}"
               if metrics["num_pairs"] is not None else "-")
        print(f"{m:<28}" + "".join(f"{med(m, s):>9.1f}" for s in STAGES)
              + f"{totals[m]:>9.1f}{totals[m] / totals[ref]:>7.2f}x  {mel}")
    print(f"\nratio = median step wall time / {ref}'s (seconds per stage are medians over repeats)")


if __name__ == "__main__":
    main()
