"""Resume cost: wall time of a tiny run, of the same command run again, and of a rerun forced through the Prefect
flow (every stage a cache hit), measured side by side in one process tree.

    python benchmarks/resume.py [--config configs/tiny.yaml]

Prints the three wall times and the ratios rerun/first and forced-rerun/first.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"mel {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return took, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["run", args.config, "--run-dir", f"{tmp}/run"]
        first, _ = timed(cmd)
        again, out = timed(cmd)
        assert "stages reused" in out and "nothing recomputed" in out, out
        forced, out = timed(cmd + ["--force-flow"])
        assert "nothing recomputed" in out, out
    print(f"first run          {first:7.1f} s")
    print(f"same command again {again:7.1f} s   ratio {again / first:.3f}")
    print(f"again, via Prefect {forced:7.1f} s   ratio {forced / first:.3f}  (server start + cache lookups)")


if __name__ == "__main__":
    main()
