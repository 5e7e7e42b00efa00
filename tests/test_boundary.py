"""The pure core imports no orchestration (Prefect, Ray) and no vLLM: importing every core module leaves them out."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import mel

ORCHESTRATION = ("prefect", "ray", "vllm")
CLI_ONLY = {"mel.cli"}  # reaches flows/, lazily, inside its commands


def core_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(mel.__path__, "mel.")]
    return [n for n in names if n not in CLI_ONLY]


def test_core_has_modules():
    assert {"mel.algos", "mel.config", "mel.update", "mel.engines", "mel.stages.rollout"} <= set(core_modules())


def test_core_imports_no_orchestration_or_vllm():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ORCHESTRATION!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "", f"core modules pulled in: {out.stdout.strip()}"


def test_cli_module_imports_without_prefect():
    code = "import sys, mel.cli; print(any(m.startswith('prefect') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
