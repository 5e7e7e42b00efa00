"""The training flows: a run is N steps; a step is the stage table ``mel.stages.table.STEP``:
rollout -> verify -> [pair -> (revise) -> extract -> replay] -> update.

The bracketed stages run when meta-experience learning is on (``mel.builder`` is not ``none``): MEL, MEL-Code,
Self-Critique and their ablations (``configs/methods/``); revise runs for R-MEL and MEL+Extra (``revise.mode``).
``train_step`` runs the table's enabled stages in order, each its cached task (``tasks.stage``), handing each the
artifacts (by role) and stats of the stages before it.

Run it:
    mel run configs/tiny.yaml --run-dir runs/tiny            # the CLI (progress lines + a summary)
    mel run configs/methods/mel_code.yaml                    # MEL-Code on the demo model
    mel run configs/methods/mel_code.yaml --base configs/tiny.yaml   # the same method on the tiny config
    python -m flows.train configs/tiny.yaml                  # the same flow, without the CLI
    mel run configs/tiny.yaml --set "run.loggers=[tensorboard, wandb, mlflow]"   # also to trackers (flows.trackers)

Every stage is a cached Prefect task writing Parquet artifacts under the run directory; running the
same command again reuses every stage whose artifact is complete and says so. With ``PREFECT_API_URL`` set the runs
appear on that server (and its UI); otherwise Prefect starts a temporary local server.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
from prefect import flow

from mel import artifacts, schemas
from mel.checkpoints import prune
from mel.config import Config, config_hash, default_run_dir, load_config, to_yaml
from mel.progress import progress
from mel.stages.step import Stage, StageResult, StepStats, StepTable, read_metrics, stage_inputs
from mel.stages.table import step_table
from flows.caching import results_storage, run_cached
from flows.evaluate import evaluate_ends
from flows.params import ConfigPath, MethodName, Seed, Steps, overrides_for
from flows.run_page import RunPage
from flows.trackers import RunTrackers
from tasks.common import run_config
from tasks.prepare import prepare_model
from tasks.stage import stage_task


def init_run_dir(cfg: Config, run_dir: str) -> str:
    """Save the resolved config as ``run_dir/config.yaml``; refuse a run directory that holds another config."""
    uri = artifacts.join(run_dir, "config.yaml")
    digest = config_hash(cfg)
    if artifacts.is_complete(uri):
        existing = artifacts.read_manifest(uri).get("config_hash")
        if existing != digest:
            raise ValueError(
                f"{run_dir} holds a run of another config (hash {existing}, this one is {digest}); "
                "pass another --run-dir or leave it out to use runs/<name>-<hash>"
            )
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open(tmp, "wt") as f:  # rewritten each time: run.steps may have grown (it is not in the hash)
        f.write(to_yaml(cfg))
    fs.mv(tmp, path)  # whole or not at all: a kill mid-write leaves the old file
    artifacts.write_manifest(uri, config_hash=digest)
    return uri


def call_stage(stage: Stage, storage: Path, on_ray: bool = False, **params) -> StageResult:
    """Run a stage's task; a Prefect cache hit or already complete outputs are reported as reused (both are
    `mel.stages.step.Stage.complete`'s answer: a hit whose outputs have since been deleted, or whose inputs changed,
    cannot happen). On Ray, a stage that needs no policy is a Ray task asking for its table resources; a policy
    stage's task hands its work to the run's policy worker (`tasks.stage`)."""
    progress.stage_start(stage.name, params["step"])
    remote = stage.resources.remote_options() if on_ray and not stage.resources.gpu else None
    result, cached = run_cached(stage_task(stage), storage, remote, stage_name=stage.name, **params)
    if cached:
        result = dataclasses.replace(result, reused=True)
    progress.stage_done(result)
    return result


@flow(name="mel-step", log_prints=False)
def train_step(
    config_uri: str, cfg_hash: str, run_dir: str, step: int, checkpoint_uri: str, table: str = "mel"
) -> dict[str, str]:
    """One RL step: the enabled stages of the step table ``table`` (a name in ``STEP_TABLES``), in order; returns the
    step's artifacts by role (the update's ``metrics`` and the next ``checkpoint`` among them)."""
    storage = results_storage(run_dir)
    cfg = run_config(config_uri, cfg_hash)
    available = {"checkpoint": checkpoint_uri}  # role -> URI: the step's input, then each stage's outputs
    stats = StepStats()
    for stage in step_table(table).enabled(cfg):
        result = call_stage(stage, storage, cfg.cluster.ray is not None, config_uri=config_uri, config_hash=cfg_hash,
                            run_dir=run_dir, step=step, inputs=stage_inputs(stage, available), upstream=stats)
        available.update(result.outputs)
        stats = stats.add(stage.name, result.stats)
    return available


def write_run_metrics(run_dir: str, metrics_uris: Sequence[str], schema: pa.Schema) -> str:
    """``run_dir/metrics.parquet``: the per-step metrics rows of every finished step, as the step table's columns
    (``schema``: null where a stage did not run); its manifest's ``step_stats`` lists each step's stage stats (also
    those with no metrics column)."""
    tables = [read_metrics(u, schema) for u in metrics_uris]
    step_stats = [artifacts.read_manifest(u)["step_stats"] for u in metrics_uris]
    out = artifacts.join(run_dir, "metrics.parquet")
    artifacts.write_table(out, pa.concat_tables(tables), schema, steps=len(tables), step_stats=step_stats)
    return out


def write_revision_report(run_dir: str, steps: int, table: StepTable, cfg: Config) -> str:
    """R-MEL / MEL+Extra runs: ``run_dir/report/`` gets the revision analytics of every finished step as Parquet
    (``revision_groups``, ``revision_buckets``) and ``revisions.png`` (success per tau, LCP ratios, success by
    difficulty and log-prob quintile, tokens per group)."""
    import tempfile

    from mel.experience.revision_report import plot_revisions, write_analytics

    rows: list[dict] = []
    for step in range(steps):
        uri = table.uri(run_dir, step, "revisions", cfg)
        if artifacts.is_complete(uri):
            rows += artifacts.read_table(uri, schemas.REVISIONS).to_pylist()
    report = artifacts.join(run_dir, "report")
    write_analytics(rows, report, steps=steps)
    png = artifacts.join(report, "revisions.png")
    with tempfile.TemporaryDirectory() as tmp:
        plot_revisions(rows, f"{tmp}/revisions.png", title=run_dir.rstrip("/").rsplit("/", 1)[-1])
        import fsspec

        fs, path = fsspec.core.url_to_fs(png)
        fs.put_file(f"{tmp}/revisions.png", path)
    return png


@contextlib.contextmanager
def on_cluster(cfg: Config, run_dir: str, table: StepTable) -> Iterator:
    """The step flow to run: ``train_step`` itself, or on a Ray cluster (``cluster.ray``) ``train_step`` with a
    ``RayTaskRunner`` on that cluster, with every Ray worker reporting to this run's Prefect API: ``PREFECT_API_URL``
    when set, else the one local server this process started (without it, each worker would start a temporary
    server of its own). The run's policy worker, and a Ray worker for the other stages' tasks, start when the
    cluster is joined, before the first step (`start_policy_worker`, `tasks.cluster.warm_task_workers`)."""
    if cfg.cluster.ray is None:
        yield train_step
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_ray import RayTaskRunner

    from tasks import cluster
    from tasks.policy_worker import release_policy_workers, start_policy_worker

    owned = cluster.connect(cfg.cluster.ray)
    try:
        cluster.say(cluster.describe())
        cluster.warm_task_workers(s.resources.remote_options() for s in table.enabled(cfg) if not s.resources.gpu)
        started = time.perf_counter()
        where = start_policy_worker(cfg, run_dir)
        cluster.say(f"policy worker up in {time.perf_counter() - started:.1f} s (pid {where['pid']}, node "
                    f"{where['node_id'][:12]}, {cluster.resources_text(where['resources'])})")
        api = PREFECT_API_URL.value()
        if not api:
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()  # the local server this flow run already reports to
            server.start()
            api = server.api_url
        with temporary_settings({PREFECT_API_URL: api}):
            yield train_step.with_options(task_runner=RayTaskRunner(init_kwargs=cluster.init_kwargs(cfg.cluster.ray)))
    finally:
        release_policy_workers()
        if owned:
            import ray

            ray.shutdown()


@flow(name="mel-train", log_prints=False)
def train(
    config_path: ConfigPath = "configs/demo.yaml",
    overrides: list[str] | None = None,
    run_dir: str | None = None,
    base: str | None = None,
    table: str = "mel",
    ray: str | None = None,
    method: MethodName | None = None,
    steps: Steps = None,
    seed: Seed = None,
) -> str:
    """Train for ``run.steps`` steps; returns the run directory.

    Args:
        config_path: The run's config: a shipped base config (the Run form's choices), or from Python any YAML
            path or fsspec URL.
        overrides: Config fields to change, as in `mel run --set`: ["section.field=value", ...], e.g.
            ["data.prompts_per_step=8", "optimizer.lr=1e-5"].
        run_dir: Run directory (path or fsspec URL). Empty: runs/<run name>-<config hash>. Running a finished run
            again recomputes nothing.
        base: Lay config_path over this file instead of the one its `base:` key names.
        table: The step table (`mel.stages.table.STEP_TABLES`): "mel", the paper's stage list.
        ray: Run the stages on a Ray cluster: "local" (one for this run), "auto" (the cluster `ray start` made on
            the worker's machine), or HOST:PORT / ray://HOST:PORT. Empty: every stage in this flow's process.
        method: A method under configs/methods/, laid over config_path (e.g. mel_code on configs/tiny.yaml).
        steps: RL steps (run.steps); empty: the config's.
        seed: Run seed (run.seed); empty: the config's.
    """
    method_file, typed = overrides_for(method, steps, seed)
    if method_file:
        config_path, base = method_file, base or config_path
    cfg = load_config(config_path, [*(overrides or []), *typed, *([f"cluster.ray={ray}"] if ray else [])], base=base)
    run_dir = run_dir or default_run_dir(cfg)
    cfg_hash = config_hash(cfg)
    with RunPage(cfg, run_dir, cfg_hash) as page, RunTrackers(cfg, run_dir, cfg_hash) as trackers, \
            on_cluster(cfg, run_dir, step_table(table)) as step_flow:
        progress.run_start(cfg, run_dir)
        config_uri = init_run_dir(cfg, run_dir)
        trackers.start()  # run.loggers: TensorBoard, W&B, MLflow (flows.trackers), each on a thread of its own
        checkpoint = prepare_model(config_uri, cfg_hash)
        metrics_uris = []
        for step in range(cfg.run.steps):
            produced = step_flow(config_uri, cfg_hash, run_dir, step, checkpoint, table)
            checkpoint = produced["checkpoint"]
            metrics_uris.append(produced["metrics"])
            metrics_uri = write_run_metrics(run_dir, metrics_uris, step_table(table).metrics)
            prune(run_dir, step, cfg.run.keep_checkpoints, cfg.run.keep_every)  # now that its checkpoint is done
            rows = artifacts.read_table(metrics_uri).to_pylist()
            page.step_done(step, rows)
            trackers.step_done(step, rows)
        if step_table(table).producer("revisions", cfg) is not None:
            write_revision_report(run_dir, cfg.run.steps, step_table(table), cfg)
        metrics = artifacts.read_table(artifacts.join(run_dir, "metrics.parquet")).to_pylist()
        progress.run_done(run_dir, metrics, checkpoint)
        page.run_done(metrics, checkpoint)
        trackers.run_done(metrics, checkpoint)
        if cfg.eval.benchmarks:
            scores = evaluate_ends(cfg, run_dir)
            page.before_after(scores)
            trackers.before_after(scores)
    return run_dir


if __name__ == "__main__":
    train(sys.argv[1] if len(sys.argv) > 1 else "configs/demo.yaml", sys.argv[2:])
