"""Expected errors of ``mel run`` end as a short message on stderr, exit status 2, no traceback, before any Prefect
server starts."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def _run(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_missing_config_file(tmp_path) -> None:
    proc = _run(str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"mel: config error: {tmp_path / 'nope.yaml'}: config file not found"


def test_config_that_is_not_yaml(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    proc = _run(str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not valid YAML" in proc.stderr


@pytest.mark.parametrize("case", ["missing", "bad_row"])
def test_bad_data_is_named_before_any_server_starts(tmp_path, case: str) -> None:
    data = tmp_path / "mbpp.jsonl"
    if case == "bad_row":
        data.write_text(json.dumps({"text": "x", "code": "def f(): pass", "task_id": 1}) + "\n")
    proc = _run("configs/tiny.yaml", "--set", "data.taskset=mbpp", "--set", f"data.path={data}", "--run-dir",
                str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "prefect" not in proc.stderr.lower()
    assert proc.stderr.startswith("mel run: ")
    if case == "missing":
        assert proc.stderr.strip() == f"mel run: {data}: file not found"
    else:
        assert "mbpp.jsonl line 1: field 'test_list'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
