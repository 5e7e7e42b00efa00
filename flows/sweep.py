"""The sweep flow: the cells of a sweep file (methods x config fields x seeds over a base config: `mel.sweeps`), each a
``mel-train`` subflow run, each final checkpoint evaluated when the file names benchmarks (a ``mel-eval`` subflow),
then ``mel report`` over the cells: written under the sweep's report folder and published as a markdown artifact
(key ``sweep-<name>``: the cells table, then the report) on the flow run's page.

    mel sweep configs/sweeps/nightly_tiny.yaml                   # the CLI: a per-cell line, then the report's location
    python -m flows.sweep configs/sweeps/nightly_tiny.yaml       # the same flow, without the CLI
    prefect deploy --all && prefect worker start --pool mel-process      # scheduled (prefect.yaml)
    python -m deploy.deploy                                      # or served, with the same schedules

Nothing is recomputed that is complete: a cell whose every stage output exists for its config hash and steps
(`mel.stages.step.completed_run_metrics`) is skipped without entering its subflow, an evaluation whose cells are all
complete likewise, and the report is rebuilt only when its inputs changed (`mel.sweeps.report_is_current`). A cell
that fails does not stop the others: the report covers the cells that trained, and the flow run then fails naming
the failed cells (retrying it runs only those).

Cells run one after another, in this flow's process. Running them at once would need each cell in its own process:
a direct subflow call runs in the caller's thread, and the run's state is per process (``mel.progress.progress``,
the engine cache, torch's intra-op threads, ``tasks.policy_worker``'s handles, which ``mel-train`` releases all at
once when a run ends). The way to it is one ``mel-train`` flow run per cell (``prefect.deployments.run_deployment``
of ``mel-train``, waited on together), with the work pool's concurrency limit saying how many train at once; on Ray
each of those runs gets its own policy worker (``cluster.policy_gpus``), so cells spread over the cluster's GPUs.
"""
from __future__ import annotations

import sys
import time

from prefect import flow

from flows.params import SweepPath
from mel import artifacts
from mel.sweeps import (
    PlannedCell, Sweep, cell_head, completed_metrics, eval_complete, eval_request, load_sweep, plan_sweep,
    skipped_line, write_sweep_report,
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_cell(sweep: Sweep, p: PlannedCell, total: int, ray: str | None) -> str:
    """Train the cell (skipped when complete), then evaluate its final checkpoint when the sweep asks; says a line per
    cell; returns what this trigger did."""
    from flows.train import train

    head = cell_head(sweep, p, total)
    t0 = time.perf_counter()
    metrics = completed_metrics(p)
    if metrics is not None:
        done = "complete, skipped"
        say(skipped_line(sweep, p, total, metrics))
    else:
        say(f"{head}: training -> {p.run_dir}")
        group = [f"trackers.group={sweep.name}"]  # run.loggers: the cell's tracker runs sit in the sweep's group
        train(p.cell.config_path, [*group, *p.cell.overrides], run_dir=p.run_dir, base=p.cell.base, ray=ray)
        done = f"trained in {time.perf_counter() - t0:.1f} s"
        say(f"{head}: {done}")
    req = eval_request(sweep, p.run_dir)
    if req is None:
        return done
    if eval_complete(req):
        say(f"{head}: eval on {', '.join(req.benchmarks)} complete, skipped ({artifacts.join(p.run_dir, 'eval')})")
        return done + "; eval complete, skipped"
    from flows.evaluate import evaluate

    t1 = time.perf_counter()
    say(f"{head}: evaluating the final checkpoint on {', '.join(req.benchmarks)}")
    evaluate(req.target, list(req.benchmarks), limit=req.limit, samples=req.samples, temperature=req.temperature,
             max_new_tokens=req.max_new_tokens, steps=req.steps, data_root=req.data_root,
             config_path=req.config_path)
    say(f"{head}: evaluated in {time.perf_counter() - t1:.1f} s")
    return done + f"; evaluated in {time.perf_counter() - t1:.1f} s"


def publish(sweep: Sweep, markdown: str) -> None:
    """The report (with the cells table) as a markdown artifact of the running flow, keyed by the sweep's name so the
    Artifacts page keeps each scheduled sweep's history."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown, key=f"sweep-{sweep.name}",
                             description=f"sweep {sweep.name}: report written to {sweep.report_dir}")


@flow(name="mel-sweep", log_prints=False)
def sweep(sweep_file: SweepPath, ray: str | None = None) -> str:
    """Run a sweep file's cells, then its report; returns the report's path (``<report.out>/report.md``).

    Args:
        sweep_file: a sweep file (``configs/sweeps/*.yaml``: base config, methods, grid, seeds, benchmarks, report):
            on the Run form the shipped ones; from Python a path relative to the worker's working directory (the
            repository) or an absolute one.
        ray: a Ray address (``local``, ``auto``, ``HOST:PORT``) every cell trains on (`tasks.cluster`), joined once
            for the whole sweep; empty trains in this process.
    """
    spec = load_sweep(sweep_file)
    planned = plan_sweep(spec)
    t0 = time.perf_counter()
    owned = False
    if ray:
        from tasks.cluster import connect

        owned = connect(ray)
    status: dict[int, str] = {}
    failed: list[PlannedCell] = []
    try:
        for p in planned:
            try:
                status[p.cell.index] = run_cell(spec, p, len(planned), ray)
            except Exception as exc:  # one failed cell does not stop the others; the flow run fails at the end
                status[p.cell.index] = f"failed: {type(exc).__name__}: {exc}"
                failed.append(p)
                say(f"{cell_head(spec, p, len(planned))}: {status[p.cell.index]}")
    finally:
        if owned:
            import ray as ray_module

            ray_module.shutdown()
    if len(failed) == len(planned):
        raise RuntimeError(f"sweep {spec.name}: every cell failed; no report")
    result = write_sweep_report(spec, planned, status, failed={p.cell.index for p in failed})
    if result.warnings:
        say(f"[sweep {spec.name}] the report has {len(result.warnings)} notes (its Notes section)")
    publish(spec, result.markdown)
    say(f"[sweep {spec.name}] {len(planned)} cells in {time.perf_counter() - t0:.1f} s; report "
        f"{'unchanged' if result.reused else 'written'}: {result.markdown_path} (and report.html, PNGs, CSVs)")
    if failed:
        raise RuntimeError(f"sweep {spec.name}: {len(failed)} of {len(planned)} cells failed (retry the flow run: "
                           "complete cells are skipped): " + "; ".join(status[p.cell.index] for p in failed))
    return result.markdown_path


if __name__ == "__main__":
    sweep(sys.argv[1], *(sys.argv[2:3] or []))
