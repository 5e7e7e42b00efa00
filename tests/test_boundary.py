"""The pure core (``mel``) imports no orchestration (Prefect, Ray), nothing of the layers above it (``flows``,
``tasks``, ``cli``, ``deploy``) and vLLM only in its engine adapter -- in its source, deferred imports included, and in
``sys.modules`` after importing every core module. The ``mel`` command (``cli``) imports Prefect only when it runs a
flow."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import mel

REPO = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("prefect", "ray", "vllm")
ABOVE_THE_CORE = ("flows", "tasks", "cli", "deploy", "prefect", "prefect_ray", "ray")
VLLM_ADAPTER = "mel/engines/vllm_engine.py"


def core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(mel.__path__, "mel.")]


def imported_roots(path: Path) -> set[str]:
    """Every top-level module an ``import`` or ``from ... import`` anywhere in the file names (functions included)."""
    return {name.split(".")[0] for name in imported_modules(path)}


def test_core_has_modules():
    assert {"mel.algos", "mel.config", "mel.update", "mel.engines", "mel.stages.rollout"} <= set(core_modules())


def test_core_source_imports_nothing_above_it():
    bad = {}
    for path in sorted((REPO / "mel").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        found = imported_roots(path) & set(ABOVE_THE_CORE)
        if "vllm" in imported_roots(path) and relative != VLLM_ADAPTER:
            found.add("vllm")
        if found:
            bad[relative] = sorted(found)
    assert not bad, f"core files importing orchestration or the layers above the core: {bad}"


def test_the_source_scan_sees_deferred_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from flows.train import train\n    import prefect.flows\n")
    assert {"flows", "prefect"} <= imported_roots(probe)


def test_core_imports_no_orchestration_or_vllm():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ORCHESTRATION!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"core modules pulled in: {out.stdout.strip()}"


def test_the_gpu_path_needs_only_torch_transformers_and_the_core():
    """``benchmarks/gpu_check.py`` runs on a GPU machine with torch and transformers only: the model loader, the
    transformers engine and the trainer pull in no orchestration, no vLLM and no artifact store (pyarrow)."""
    code = ("import sys, mel.models, mel.update, mel.engines.hf\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'ray', 'vllm', 'pyarrow'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"the GPU path pulled in: {out.stdout.strip()}"


def test_cli_module_imports_without_prefect():
    code = "import sys, cli.main; print(any(m.startswith('prefect') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def imported_modules(path: Path) -> set[str]:
    """Every module an import in the file names, in full (``mel.eval.metrics``), functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_training_stages_do_not_import_evaluation():
    """``mel.eval`` builds on ``mel.stages`` (a run's checkpoints, the step layout), never the other way round: the
    two packages do not import each other."""
    bad = {path.relative_to(REPO).as_posix(): sorted(m for m in imported_modules(path) if m.startswith("mel.eval"))
           for path in sorted((REPO / "mel" / "stages").rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}
