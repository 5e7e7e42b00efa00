"""``mel sweep``: run a sweep file's cells and end with their comparison report (`mel.sweeps`, `flows.sweep`).

    mel sweep configs/sweeps/nightly_tiny.yaml [--ray ADDRESS]     run it (each cell a mel-train subflow run)
    mel sweep configs/sweeps/nightly_tiny.yaml --list              its cells, run directories and what is complete

Like ``mel run``, a sweep whose cells, evaluations and report are all complete is reported without starting Prefect
(``--force-flow`` goes through the flow anyway, as a triggered deployment does).
"""
from __future__ import annotations

import argparse
import sys
from typing import cast

SWEEP_DESCRIPTION = """Run a sweep file: every cell (method x grid point x seed over the base config) trains as a
mel-train subflow run in its default run directory, optionally evaluates its final checkpoint, and the sweep ends
with `mel report` over its cells (written under report.out, default reports/<name>, and published as a Prefect
artifact). Cells already complete are skipped; running the same command again recomputes nothing."""


def _status(p, sweep) -> tuple[list[dict] | None, bool]:
    """The cell's metrics when its run is complete, and whether its evaluation (if any) is complete too."""
    from mel.sweeps import completed_metrics, eval_complete, eval_request

    metrics = completed_metrics(p)
    req = eval_request(sweep, p.run_dir)
    return metrics, req is None or (metrics is not None and eval_complete(req))


def _cmd_sweep(args: argparse.Namespace) -> int:
    from cli.preflight import data_problem, isolation_problem, quiet_environment

    quiet_environment(args.verbose)
    from mel.sweeps import cell_head, load_sweep, plan_sweep, report_is_current, skipped_line

    spec = load_sweep(args.sweep_file)  # a bad sweep file or cell config fails here, before any server starts
    planned = plan_sweep(spec)
    status = [_status(p, spec) for p in planned]
    if args.list:
        for p, (metrics, evaluated) in zip(planned, status):
            state = "complete" if metrics is not None else "to train"
            if spec.eval.benchmarks:
                state += ", evaluated" if evaluated else ", to evaluate"
            print(f"{cell_head(spec, p, len(planned))}: {state}  {p.run_dir}")
        print(f"report: {spec.report_dir}/report.md ({'current' if report_is_current(spec, planned) else 'to build'})")
        return 0
    done = all(m is not None and e for m, e in status)
    if done and not args.force_flow and report_is_current(spec, planned):
        for p, (metrics, _) in zip(planned, status):
            print(skipped_line(spec, p, len(planned), cast(list, metrics)), file=sys.stderr)  # done: all have them
        print(f"mel sweep {spec.name}: all {len(planned)} cells complete, nothing recomputed; report (unchanged): "
              f"{spec.report_dir}/report.md")
        return 0
    for p, (metrics, _) in zip(planned, status):
        problem = "" if metrics is not None else isolation_problem(p.config) or data_problem(p.config)
        if problem:
            print(f"mel sweep: cell {p.cell.index} ({p.cell.label}): {problem}", file=sys.stderr)
            return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from flows.sweep import sweep

    report = sweep(args.sweep_file, ray=args.ray)
    print(f"mel sweep {spec.name}: report {report} (and report.html, PNGs, CSVs beside it)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="run a sweep file (methods x grid x seeds), then its comparison report",
                        description=SWEEP_DESCRIPTION)
    sw.add_argument("sweep_file", metavar="SWEEP.yaml", help="a sweep file (see configs/sweeps/)")
    sw.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="train every cell on this Ray cluster (joined once; see mel run --ray)")
    sw.add_argument("--list", action="store_true", help="list the cells and what is complete; run nothing")
    sw.add_argument("--force-flow", action="store_true",
                    help="go through the Prefect flow even when everything is complete")
    sw.add_argument("--verbose", action="store_true", help="show Prefect's own log lines")
    sw.set_defaults(fn=_cmd_sweep)
