"""Experiment trackers (``run.loggers``, `flows.trackers`), read back through each tracker's own means
(`trackers_readers`: TensorBoard's EventAccumulator, a W&B offline run's records, a real ``mlflow server``'s REST
API): every metrics row once, under ``metrics.parquet``'s names and values, across a resume; the config as
hyperparameters; the plots and the before/after table at the end; a sweep's cells grouped; a broken tracker said once,
never stopping or slowing the steps. The last test is a tiny training run through Prefect with all three (e2e)."""
from __future__ import annotations

import io
import time
import typing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas
from mel.config import config_hash, load_config, to_yaml
from mel.progress import progress
from mel.stages.table import METRICS

from conftest import REPO
from trackers_readers import (
    MlflowServer, free_port, tensorboard_hparams, tensorboard_scalars, tensorboard_tags, wandb_config, wandb_history,
    wandb_offline_runs, wandb_run,
)

TINY = str(REPO / "configs" / "tiny.yaml")
ALL = "run.loggers=[tensorboard, wandb, mlflow]"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` for the module; the MLflow tests `wait` for it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def start_mlflow_early(request):
    """Start the server with the module's first test when a selected test needs it, so that its start (~10-20 s on
    2 cores) overlaps the TensorBoard and W&B tests."""
    if any(item.module is request.module and "mlflow_server" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("mlflow_server")


@pytest.fixture
def said():
    """What the run printed (progress lines, tracker notes included)."""
    buf = io.StringIO()
    progress.stream = buf
    yield buf
    progress.stream = None


def metric_rows(steps: int) -> list[dict]:
    """Rows of every METRICS column with distinct values (``kl`` null at step 1: a null is not logged)."""
    rows = []
    for step in range(steps):
        row: dict = {"step": step}
        for i, field in enumerate(METRICS):
            if field.name != "step":
                row[field.name] = (step * 100 + i) if field.type in (schemas.pa.int32(), schemas.pa.int64()) \
                    else round(0.1234567 * (step + 1) + i, 7)
        row["kl"] = None if step == 1 else row["kl"]
        rows.append(row)
    return rows


def expected(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metric name -> [(step, value)] as every tracker should hold it."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and value is not None:
                out.setdefault(key, []).append((row["step"], value))
    return out


def make_run(path: Path, sets: list[str], steps: int):
    """A run directory with the tiny config and ``steps`` rows of metrics (what the plots are drawn from)."""
    cfg = load_config(TINY, sets)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(cfg))
    artifacts.write_rows(str(path / "metrics.parquet"), metric_rows(steps), METRICS, steps=steps)
    return cfg


def log_rows(cfg, run_dir: Path, rows: list[dict], scores=()) -> float:
    """One training process's worth of logging: each step's rows so far, the end, the scores; returns the seconds
    the step calls took (what the training loop waits)."""
    from flows.trackers import RunTrackers

    with RunTrackers(cfg, str(run_dir), config_hash(cfg)) as trackers:
        trackers.start()
        t0 = time.perf_counter()
        for i in range(len(rows)):
            trackers.step_done(i, rows[:i + 1])
        took = time.perf_counter() - t0
        trackers.run_done(rows, "checkpoint")
        trackers.before_after(list(scores))
    return took


def a_score():
    from mel.eval.before_after import BeforeAfter
    from mel.eval.runs import ScoreKey
    from mel.eval.stats import BootstrapResult

    return BeforeAfter(ScoreKey("toy_regex", "main", "greedy", "pass@1"), 2, 0.25, 0.5,
                       BootstrapResult(0.25, 0.1, 0.4, 0.02, 16, 1000, 0.05))


def test_loggers_name_the_registered_trackers_and_change_no_hash():
    from flows.trackers import TRACKERS
    from mel.config import ConfigError, RunConfig

    assert set(typing.get_args(typing.get_args(typing.get_type_hints(RunConfig)["loggers"])[0])) == \
        set(TRACKERS.names()) == {"tensorboard", "wandb", "mlflow"}
    plain = load_config(TINY)
    logged = load_config(TINY, [ALL, "trackers.project=p", "trackers.group=g", "trackers.wandb_mode=offline",
                                "trackers.mlflow_uri=http://x:5000", "trackers.name=n", "trackers.entity=e"])
    assert config_hash(logged) == config_hash(plain) and logged.run.loggers == ("tensorboard", "wandb", "mlflow")
    with pytest.raises(ConfigError, match="'neptune' is not allowed; choose one of 'tensorboard', 'wandb', 'mlflow'"):
        load_config(TINY, ["run.loggers=[neptune]"])


def test_tensorboard_holds_each_row_once_across_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_run(run_dir, ["run.loggers=[tensorboard]"], steps=3)
    rows = metric_rows(3)
    log_rows(cfg, run_dir, rows[:2])
    log_rows(cfg, run_dir, rows, [a_score()])  # the rerun hands over steps 0 and 1 again, then step 2
    folder = str(run_dir / "tensorboard")
    scalars = tensorboard_scalars(folder)
    want = expected(rows)
    assert set(scalars) == set(want)
    for key, points in want.items():  # TensorBoard keeps float32
        assert [s for s, _ in scalars[key]] == [s for s, _ in points], key
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in points], rel=1e-6), key
    tags = tensorboard_tags(folder)
    assert {"plots/training_reward"} <= set(tags["images"])
    assert {"config/text_summary", "before_after/text_summary"} <= set(tags["tensors"])
    hparams = tensorboard_hparams(folder)
    assert hparams["model.source"] == "tiny-random" and hparams["config_hash"] == config_hash(cfg)
    assert hparams["rollout.group_size"] == 8
    assert len(list((run_dir / "tensorboard").iterdir())) == 2  # one folder; an event file per process


def test_wandb_offline_run_holds_each_row_once_and_resumes_the_same_id(tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_run(run_dir, ["run.loggers=[wandb]", "trackers.wandb_mode=offline", "trackers.group=cmp",
                             "trackers.project=mel-tests"], steps=3)
    rows = metric_rows(3)
    log_rows(cfg, run_dir, rows[:2])
    log_rows(cfg, run_dir, rows, [a_score()])
    files = wandb_offline_runs(str(run_dir))
    assert len(files) == 2  # W&B writes a folder per start; `wandb sync` puts them into one run
    runs = [wandb_run(f) for f in files]
    assert {r.run_id for r in runs} == {_state(run_dir)["wandb"]["id"]}
    assert {(r.project, r.run_group, r.display_name) for r in runs} == {("mel-tests", "cmp", "run")}
    config = wandb_config(files[0])
    assert config["config_hash"] == config_hash(cfg) and config["model"]["source"] == "tiny-random"
    history = [h for f in files for h in wandb_history(f)]
    logged: dict[str, list[tuple[int, float]]] = {}
    for step, items in history:
        for key, value in items.items():
            if key in METRICS.names:
                logged.setdefault(key, []).append((step, value))
    assert logged == expected(rows)  # exact: W&B keeps the JSON of each value
    media = {k.split("/_type")[0] for _, items in history for k in items if k.endswith("/_type")}  # W&B's files
    assert {"plots/training_reward", "before_after"} <= media


def _state(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "trackers.json").read_text())


def test_mlflow_server_holds_each_row_once_and_groups_a_sweeps_cells(tmp_path, mlflow_server):
    url = mlflow_server.wait()
    sets = ["run.loggers=[mlflow]", f"trackers.mlflow_uri={url}", "trackers.group=sweep-cmp"]
    first, second = tmp_path / "grpo-1", tmp_path / "mel-2"
    cfg = make_run(first, sets, steps=3)
    rows = metric_rows(3)
    log_rows(cfg, first, rows[:2])
    log_rows(cfg, first, rows, [a_score()])
    log_rows(make_run(second, sets, steps=1), second, rows[:1])  # another cell of the same sweep
    runs = {r["info"]["run_name"]: r for r in mlflow_server.runs("sweep-cmp")}
    assert set(runs) == {"grpo-1", "mel-2"}  # a run per cell, in the sweep's experiment
    run = runs["grpo-1"]
    run_id = run["info"]["run_id"]
    assert run_id == _state(first)["mlflow"]["run_id"] and run["info"]["status"] == "FINISHED"
    for key, points in expected(rows).items():
        assert mlflow_server.history(run_id, key) == points, key
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.source"] == "tiny-random" and params["config_hash"] == config_hash(cfg)
    assert params["rollout.group_size"] == "8"
    assert {"before_after.json", "before_after.md", "plots"} <= set(mlflow_server.artifacts(run_id))
    assert "plots/training_reward.png" in mlflow_server.artifacts(run_id, "plots")


def test_a_broken_tracker_is_said_once_and_never_slows_the_steps(tmp_path, said, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    run_dir = tmp_path / "run"
    cfg = make_run(run_dir, ["run.loggers=[mlflow, wandb, tensorboard]",
                             f"trackers.mlflow_uri=http://127.0.0.1:{free_port()}"], steps=3)  # nobody listens
    rows = metric_rows(3)
    t0 = time.perf_counter()
    took = log_rows(cfg, run_dir, rows)
    assert took < 0.5 and time.perf_counter() - t0 < 30
    text = said.getvalue()
    assert text.count("tracker mlflow failed") == 1 and "no MLflow server answers" in text
    assert text.count("tracker wandb failed") == 1 and "pip install 'mel-rlvr[trackers]'" in text
    assert [s for s, _ in tensorboard_scalars(str(run_dir / "tensorboard"))["reward_mean"]] == [0, 1, 2]
    assert set(_state(run_dir)) == {"tensorboard"}


def test_each_sweep_cell_trains_in_the_sweeps_tracker_group(tmp_path, monkeypatch):
    import flows.sweep
    import flows.train
    from mel.sweeps import load_sweep, plan_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"name: cmp\nbase: {TINY}\nmethods: [grpo, mel_code]\nset: [run.steps=1, '{ALL}']\n"
                          f"runs_root: {tmp_path}/runs\n")
    spec = load_sweep(str(sweep_file))
    calls = []
    monkeypatch.setattr(flows.train, "train", lambda path, overrides, **kw: calls.append((path, overrides, kw)))
    for p in plan_sweep(spec):
        flows.sweep.run_cell(spec, p, 2, None)
    configs = [load_config(path, overrides, base=kw["base"]) for path, overrides, kw in calls]
    assert [c.trackers.group for c in configs] == ["cmp", "cmp"] and configs[0].run.loggers
    assert len({kw["run_dir"] for _, _, kw in calls}) == 2  # a run directory, so tracker runs, of its own


@pytest.mark.e2e
@pytest.mark.slow  # ~1-1.5 min on 2 cores: a tiny run of 1 step, resumed to 2, then run again with a broken tracker
def test_a_tiny_run_with_all_three_trackers_equals_metrics_parquet(prefect_harness, mlflow_server, tmp_path, said):
    from flows.train import train

    url = mlflow_server.wait()
    run_dir = tmp_path / "tiny"
    sets = [ALL, "trackers.wandb_mode=offline", f"trackers.mlflow_uri={url}", "trackers.group=tiny-e2e"]
    train(TINY, [*sets, "run.steps=1"], run_dir=str(run_dir))
    train(TINY, sets, run_dir=str(run_dir))  # resumed to 2 steps: step 0 reused, the same tracker runs go on
    want = expected(pq.read_table(run_dir / "metrics.parquet").to_pylist())
    assert [s for s, _ in want["reward_mean"]] == [0, 1]
    scalars = tensorboard_scalars(str(run_dir / "tensorboard"))
    for key, points in want.items():
        assert scalars[key] == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], key
    files = wandb_offline_runs(str(run_dir))
    assert len({wandb_run(f).run_id for f in files}) == 1
    history = [(step, items["reward_mean"]) for f in files for step, items in wandb_history(f)
               if "reward_mean" in items]
    assert history == want["reward_mean"]
    (run,) = mlflow_server.runs("tiny-e2e")
    for key, points in want.items():
        assert mlflow_server.history(run["info"]["run_id"], key) == points, key
    # a broken tracker does not stop the run: the complete run again, MLflow pointed where nobody listens
    said.truncate(0)
    broken = [*sets[:2], f"trackers.mlflow_uri=http://127.0.0.1:{free_port()}", *sets[3:]]
    assert train(TINY, broken, run_dir=str(run_dir)) == str(run_dir)
    assert said.getvalue().count("tracker mlflow failed") == 1 and "all 6 stages reused" in said.getvalue()
    assert [s for s, _ in tensorboard_scalars(str(run_dir / "tensorboard"))["reward_mean"]] == [0, 1]
