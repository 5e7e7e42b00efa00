"""The ``mel`` command line.

    mel run CONFIG.yaml [--set section.field=value ...] [--run-dir URI]   train (resumes if run before)
    mel config CONFIG.yaml [--set ...]                                     print the resolved config and its hash

This module is the only part of the ``mel`` package that reaches the orchestration layer (``flows/``), and only
inside a command, so importing ``mel`` never imports Prefect or Ray.
"""
from __future__ import annotations

import argparse
import os
import sys


def _quiet_environment(verbose: bool) -> None:
    """Settings that must be in place before Prefect / transformers are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _cmd_run(args: argparse.Namespace) -> int:
    _quiet_environment(args.verbose)
    from mel.config import load_config

    from mel.config import config_hash, default_run_dir

    cfg = load_config(args.config, args.set)  # fail fast on a bad config, before any server starts
    if not args.force_flow and _report_if_complete(cfg, args.run_dir or default_run_dir(cfg), config_hash(cfg)):
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from flows.train import train

    train(config_path=args.config, overrides=list(args.set), run_dir=args.run_dir)
    return 0


def _report_if_complete(cfg, run_dir: str, digest: str) -> bool:
    """Like make: when every stage artifact of the run already exists, say so and start no flow at all."""
    from mel.progress import progress
    from mel.stages.common import completed_run_metrics

    metrics = completed_run_metrics(run_dir, digest, cfg.run.steps)
    if metrics is None:
        return False
    progress.run_start(cfg, run_dir)
    progress.reused = [f"step {s + 1} {stage}" for s in range(cfg.run.steps) for stage in ("rollout", "verify", "update")]
    progress.run_done(run_dir, metrics, f"{run_dir.rstrip('/')}/step_{cfg.run.steps - 1:04d}/checkpoint")
    return True


def _cmd_config(args: argparse.Namespace) -> int:
    from mel.config import config_hash, default_run_dir, load_config, to_yaml

    cfg = load_config(args.config, args.set)
    print(to_yaml(cfg), end="")
    print(f"# config hash: {config_hash(cfg)}\n# default run dir: {default_run_dir(cfg)}")
    return 0


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
    config.set_defaults(fn=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mel.config import ConfigError

    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"mel: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
