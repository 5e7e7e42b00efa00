"""What running on Ray costs: the same training flow run in-process and with ``--ray local`` (a Ray cluster on this
machine, started once before the timed runs), side by side in one process, stage by stage.

    python benchmarks/ray_overhead.py                         # the tiny and the demo config, 2 steps each
    python benchmarks/ray_overhead.py --configs configs/tiny.yaml --steps 2

Each (config, path) pair trains from scratch in a fresh run directory with the same seed, so both paths do the same
work (the script checks that their metrics are equal). Times are the flow's wall time per stage call (what a user
waits for: Prefect task, Ray scheduling and the stage itself), per step, and the ratio ray / local, and the run's
start before its first stage (on Ray the run's policy worker starts there and imports its stages, and a Ray worker
for the verify stage is warmed). Step 1 includes the model load on both paths; later steps are the steady state.
Target (issue 13): under 10% on a demo-size step once the cluster is up.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(key, value)

TIMINGS = ("gen_tokens_per_s", "train_tokens_per_s")


def timed_run(config: str, steps: int, run_dir: str, ray: str | None) -> tuple[dict, list[dict]]:
    """Train ``config`` for ``steps`` steps; returns {(step, stage): seconds} and the metrics rows."""
    import flows.train as train_flow
    import pyarrow.parquet as pq
    from mel.progress import progress

    times: dict[tuple[int, str], float] = {}
    call_stage = train_flow.call_stage

    def timed(stage, storage, on_ray=False, **params):  # the flow's wall time per stage call
        t0 = time.perf_counter()
        times.setdefault((-1, "start"), t0 - started)  # the run's start: config, run dir, base model, cluster
        result = call_stage(stage, storage, on_ray, **params)
        times[(params["step"], stage.name)] = time.perf_counter() - t0
        return result

    train_flow.call_stage = timed
    progress.enabled = False
    started = time.perf_counter()
    try:
        # no before/after evaluation at the end (the demo config has one): the training steps are what is compared
        train_flow.train(config_path=config, overrides=[f"run.steps={steps}", "eval.benchmarks=[]"], run_dir=run_dir,
                         ray=ray)
    finally:
        train_flow.call_stage = call_stage
        progress.enabled = True
    rows = pq.read_table(f"{run_dir}/metrics.parquet").to_pylist()
    for r in rows:  # the stages' own seconds (measured inside the stage function, wherever it ran)
        for key in ("rollout_s", "verify_s", "update_s"):
            times[(r["step"], "in " + key[:-2])] = r[key]
    return times, [{k: v for k, v in r.items() if k not in TIMINGS and not k.endswith("_s")} for r in rows]


def report(config: str, local: dict, ray: dict, steps: int) -> None:
    stages = [s for s in dict.fromkeys(stage for _, stage in local) if not s.startswith("in ") and s != "start"]
    print(f"\n{config}: seconds per stage call, local vs --ray local (ratio)")
    print(f"run start before step 1 (config, run dir, base model; on Ray also the policy worker's start): "
          f"{local[(-1, 'start')]:.1f} vs {ray[(-1, 'start')]:.1f} s")
    print(f"{'step':>4} " + " ".join(f"{s:>22}" for s in stages) + f" {'step total':>24}")
    for step in range(steps):
        cells = []
        for s in stages:
            a, b = local.get((step, s), 0.0), ray.get((step, s), 0.0)
            cells.append(f"{a:7.2f} {b:7.2f} ({b / a if a else float('nan'):4.2f}x)")
        a = sum(v for (st, name), v in local.items() if st == step and name in stages)
        b = sum(v for (st, name), v in ray.items() if st == step and name in stages)
        print(f"{step + 1:>4} " + " ".join(f"{c:>22}" for c in cells)
              + f" {a:7.1f} {b:7.1f} ({b / a:4.2f}x, {100 * (b / a - 1):+.1f}%)")
    print("inside the stage function (its own seconds, wherever it ran), local vs ray:")
    for step in range(steps):
        inner = [f"{name[3:]} {local[(step, name)]:.2f} {ray[(step, name)]:.2f}"
                 for name in ("in rollout", "in verify", "in update") if (step, name) in local]
        print(f"  step {step + 1}: " + "; ".join(inner))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=[str(REPO / "configs" / "tiny.yaml"),
                                                          str(REPO / "configs" / "demo.yaml")])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from tasks import cluster

    with prefect_test_harness(server_startup_timeout=180), tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cluster.connect("local")
        print(f"Ray cluster up in {time.perf_counter() - t0:.1f} s: {cluster.describe()}")
        for config in args.configs:
            results = {}
            for path in (None, "local"):  # in-process first: it also converts/caches the base model for both
                name = "local" if path is None else "ray"
                t0 = time.perf_counter()
                results[name] = timed_run(config, args.steps, f"{tmp}/{Path(config).stem}-{name}", path)
                print(f"{config} {name}: {time.perf_counter() - t0:.1f} s in all", flush=True)
            same = results["local"][1] == results["ray"][1]
            report(config, results["local"][0], results["ray"][0], args.steps)
            print(f"metrics equal on both paths: {same}")
            if not same:
                diffs = collections.Counter(k for a, b in zip(results["local"][1], results["ray"][1])
                                            for k in a if a[k] != b[k])
                print(f"  differing metrics: {dict(diffs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
