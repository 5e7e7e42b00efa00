"""The step declared once, as data (`mel.stages.table`): the stage list each method runs, the table's checks, typed
stats through manifests, the metrics row built from the stages' stats, and a step built from a test-only table with
an extra stage, which the flow runs, the resume check requires, the progress prints and the metrics record keeps."""
from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas
from mel.config import Config, config_hash, load_config
from mel.stages.step import (
    Stage,
    StageContext,
    StageStats,
    StepStats,
    StepTable,
    completed_run_metrics,
    read_metrics,
    run_stage,
    stage_inputs,
)
from mel.stages.table import METRICS, STEP, STEP_TABLES
from mel.stages.update import UpdateStats

from conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")
METHODS = REPO / "configs" / "methods"


def _cfg(method: str | None = None, overrides=()) -> Config:
    if method is None:
        return load_config(TINY, list(overrides))
    return load_config(str(METHODS / f"{method}.yaml"), list(overrides), base=TINY)


@pytest.mark.parametrize("method, stages", [
    (None, ["rollout", "verify", "update"]),
    ("mel_code", ["rollout", "verify", "pair", "extract", "replay", "update"]),
    ("rmel", ["rollout", "verify", "pair", "revise", "extract", "replay", "update"]),
])
def test_each_method_runs_the_papers_stage_list(method, stages):
    assert STEP.names(_cfg(method)) == stages


def test_revise_replaces_the_pairs_that_extract_reads():
    rmel, mel = _cfg("rmel"), _cfg("mel_code")
    assert STEP.uri("r", 3, "pairs", rmel) == "r/step_0003/revised_pairs.parquet"
    assert STEP.uri("r", 3, "pairs", mel) == "r/step_0003/pairs.parquet"
    with pytest.raises(ValueError, match="pair, revise all write 'pairs'"):
        STEP.uri("r", 3, "pairs")
    assert STEP.uri("r", 3, "checkpoint") == "r/step_0003/checkpoint"  # the update's: one writer
    available = {"checkpoint": "c", "rollouts": "r", "verdicts": "v"}
    assert stage_inputs(STEP["update"], available) == {**available, "meta_experiences": None}


@dataclass(frozen=True)
class CountStats(StageStats):
    prompts: int
    longest_completion: int  # tokens
    seconds: float

    metric_columns = (pa.field("longest_completion", pa.int64()),)  # its column in the step's metrics row

    def summary(self) -> str:
        return f"{self.prompts} prompts, longest completion {self.longest_completion} tokens"

    def metrics(self, step: StepStats) -> dict:
        return {"longest_completion": self.longest_completion}


COUNTS = pa.schema([("prompt_index", pa.int32()), ("samples", pa.int32()), ("tokens", pa.int64())])


def run_count(cfg: Config, ctx: StageContext, rollouts: str) -> CountStats:
    """A trivial extra stage: per prompt, its samples and completion tokens."""
    t0 = time.perf_counter()
    rows = artifacts.read_table(rollouts, schemas.ROLLOUTS).to_pylist()
    per_prompt: dict[int, list[int]] = {}
    for r in rows:
        per_prompt.setdefault(r["prompt_index"], []).append(r["num_completion_tokens"])
    out = [{"prompt_index": p, "samples": len(t), "tokens": sum(t)} for p, t in sorted(per_prompt.items())]
    stats = CountStats(prompts=len(out), longest_completion=max(r["num_completion_tokens"] for r in rows),
                       seconds=time.perf_counter() - t0)
    artifacts.write_rows(ctx.outputs["counts"], out, COUNTS, **ctx.record(stats))
    return stats


COUNT = Stage("count", run_count, CountStats, inputs=("rollouts",), outputs={"counts": "counts.parquet"})
WITH_COUNT = StepTable(*STEP.stages[:2], COUNT, *STEP.stages[2:])  # rollout, verify, count, ...
if "test-with-count" not in STEP_TABLES:
    STEP_TABLES.register("test-with-count")(WITH_COUNT)


def test_the_table_checks_its_entries():
    with pytest.raises(ValueError, match=r"stage 'count' reads \['rollouts'\], which no earlier stage"):
        StepTable(COUNT, *STEP.stages)
    with pytest.raises(ValueError, match="stage names repeat"):
        StepTable(*STEP.stages, STEP["update"])
    with pytest.raises(ValueError, match=r"writes \['metrics'\]"):
        StepTable(STEP["rollout"], dataclasses.replace(COUNT, outputs={"checkpoint": "c"}))
    with pytest.raises(TypeError, match=r"does not take \('cfg', 'ctx', 'verdicts'\)"):
        Stage("count", run_count, CountStats, inputs=("verdicts",), outputs={"counts": "counts.parquet"})

    @dataclass
    class Loose(StageStats):
        seconds: float

    with pytest.raises(TypeError, match="not a frozen StageStats dataclass"):
        Stage("count", run_count, Loose, inputs=("rollouts",), outputs={"counts": "counts.parquet"})


def test_stats_come_back_from_a_manifest_with_exactly_their_fields(tmp_path):
    uri = str(tmp_path / "counts.parquet")
    stats = CountStats(prompts=2, longest_completion=7, seconds=0.25)
    artifacts.write_rows(uri, [], COUNTS, **stats.manifest())
    assert CountStats.from_manifest(uri, artifacts.read_manifest(uri)) == stats
    renamed = {"stats": {"prompts": 2, "longest": 7, "seconds": 0.25}}
    with pytest.raises(ValueError, match="not a CountStats .* another version of mel"):
        CountStats.from_manifest(uri, renamed)
    with pytest.raises(ValueError, match="not a CountStats"):
        CountStats.from_manifest(uri, {"rows": 0})


def _filled(kind: type[StageStats]) -> StageStats:
    """A record of ``kind`` with every field set (no value null or zero)."""
    sample = {"int": 3, "float": 0.5, "float | None": 0.5, "str": "x", "bool": True, "dict[str, int]": {"passed": 3}}
    return kind(**{f.name: sample[f.type] for f in dataclasses.fields(kind)})


def test_metrics_row_is_built_from_the_stage_stats():
    every = StepStats()
    for stage in STEP:
        every = every.add(stage.name, _filled(stage.stats))
    row = every.metrics_row(4)
    assert list(row) == METRICS.names == every.metrics_schema().names
    assert [c for c, v in row.items() if v is None] == []  # every column has a stage that fills it
    assert row["step"] == 4 and row["p_pair"] == row["mixed_group_rate"] == 0.5
    assert row["extract_s"] == 1.0 and row["mel_gen_tokens"] == 6 and row["mean_completion_tokens"] == 1.0
    pa.Table.from_pylist([row], schema=METRICS)  # the types fit

    grpo = StepStats()
    for name in ("rollout", "verify", "update"):
        grpo = grpo.add(name, _filled(STEP[name].stats))
    row = grpo.metrics_row(0)
    mel_columns = {"num_pairs", "num_built", "num_accepted", "p_accept", "p_usable", "retention",
                   "mel_gen_tokens", "extract_s", "replay_s", "revise_groups", "rescued_groups",
                   "revision_attempts", "revision_tokens", "filter_rejections", "token_allowance", "token_match",
                   "revise_s"}
    assert set(METRICS.names) - set(row) == mel_columns  # a step's row has the columns of the stages that ran
    assert set(grpo.metrics_schema().names) == set(row)
    with pytest.raises(LookupError, match=r"no PairStats among this step.s stages \(extract\)"):
        StepStats().add("extract", _filled(STEP["extract"].stats)).metrics_row(0)  # extract_s counts the pairing
    assert isinstance(grpo.require(UpdateStats), UpdateStats)


def test_a_stage_declares_its_metrics_columns_and_the_table_merges_them(tmp_path):
    """The count stage's column takes its place in the table's metrics schema (after verify's, as in the step); a
    column two stages declare, or values other than the declared columns, are errors; metrics rows written before
    stages declared their columns (another column order) read the same, and a column no stage declares is named."""
    assert WITH_COUNT.metrics.names == [*STEP.metrics.names[:7], "longest_completion", *STEP.metrics.names[7:]]
    assert WITH_COUNT.metrics.field("longest_completion").type == pa.int64()

    @dataclass(frozen=True)
    class Clash(StageStats):
        seconds: float
        metric_columns = (pa.field("verify_s", pa.float64()),)

    with pytest.raises(ValueError, match="metrics column 'verify_s' of Clash is also VerifyStats's"):
        StepTable(*STEP.stages[:2], Stage("clash", run_count, Clash, inputs=("rollouts",),
                                          outputs={"x": "x.parquet"}), *STEP.stages[2:])

    @dataclass(frozen=True)
    class Wrong(CountStats):
        def metrics(self, step: StepStats) -> dict:
            return {"longest": self.longest_completion}

    with pytest.raises(TypeError, match=r"Wrong.metrics\(\) gave \['longest'\], not its metric_columns"):
        StepStats().add("count", Wrong(prompts=1, longest_completion=2, seconds=0.0)).metrics_row(0)

    uri = str(tmp_path / "metrics.parquet")
    old_order = pa.schema(list(reversed(list(STEP.metrics))))
    row = {n: None for n in old_order.names} | {"step": 2, "reward_mean": 0.25}
    artifacts.write_rows(uri, [row], old_order)
    table = read_metrics(uri, STEP.metrics)
    assert table.schema == STEP.metrics and table.to_pylist()[0]["reward_mean"] == 0.25
    artifacts.write_rows(uri, [{"step": 0, "longest_completion": 9}], pa.schema([STEP.metrics.field("step"),
                                                                                 ("longest_completion", pa.int64())]))
    assert read_metrics(uri, WITH_COUNT.metrics).to_pylist()[0]["longest_completion"] == 9
    with pytest.raises(ValueError, match=r"metrics columns \['longest_completion'\] belong to no stage"):
        read_metrics(uri, STEP.metrics)


def test_no_step_stage_list_outside_the_table():
    """The flow, the resume check and the CLI take the stage list from the table: no stage's file name or list of
    stage names is written anywhere else."""
    for path in ("flows/train.py", "cli/main.py", "mel/stages/step.py", "tasks/stage.py"):
        text = (REPO / path).read_text()
        for stage in STEP:
            for name in stage.outputs.values():
                if name != "checkpoint":
                    assert f'"{name}"' not in text, (path, name)
        assert '"pair", "extract"' not in text and '("rollout", "verify")' not in text, path


@pytest.mark.e2e
def test_a_step_built_from_a_table_with_an_extra_stage(prefect_harness, tmp_path):
    from flows.train import train
    from cli.main import _report_if_complete
    from mel.progress import progress

    run_dir = tmp_path / "count"
    overrides = ["run.steps=1"]

    def run() -> str:
        buf = io.StringIO()
        progress.stream = buf
        try:
            train(config_path=TINY, overrides=overrides, run_dir=str(run_dir), table="test-with-count")
        finally:
            progress.stream = None
        return buf.getvalue()

    out = run()
    counts = str(run_dir / "step_0000" / "counts.parquet")
    assert artifacts.is_complete(counts) and pq.read_table(counts).num_rows == 8  # the flow ran it
    rollouts = pq.read_table(run_dir / "step_0000" / "rollouts.parquet").to_pylist()
    longest = max(r["num_completion_tokens"] for r in rollouts)
    assert "count    done" in out and f"8 prompts, longest completion {longest} tokens" in out  # its progress line
    recorded = artifacts.read_manifest(str(run_dir / "step_0000" / "update.parquet"))["step_stats"]
    assert list(recorded) == ["rollout", "verify", "count", "update"]
    assert recorded["count"]["longest_completion"] == longest  # its whole stats record, with the metrics row
    run_stats = artifacts.read_manifest(str(run_dir / "metrics.parquet"))["step_stats"]
    assert run_stats[0]["count"] == recorded["count"]
    metrics = pq.read_table(run_dir / "metrics.parquet")
    assert metrics.schema.names == WITH_COUNT.metrics.names  # its column, where the table puts it
    assert metrics.column("longest_completion").to_pylist() == [longest]

    cfg = load_config(TINY, overrides)
    digest = config_hash(cfg)
    assert completed_run_metrics(WITH_COUNT, str(run_dir), digest, 1) is not None
    artifacts.remove(counts)
    assert completed_run_metrics(WITH_COUNT, str(run_dir), digest, 1) is None  # the resume check requires it
    with pytest.raises(ValueError, match="longest_completion"):  # the paper's table needs no counts.parquet, but
        completed_run_metrics(STEP, str(run_dir), digest, 1)  # the run's metrics have a column none of its stages has

    out = run()
    assert artifacts.is_complete(counts) and "count    done" in out and "reused 3 of 4 stages" in out
    buf = io.StringIO()
    progress.stream = buf
    try:
        assert _report_if_complete(cfg, str(run_dir), digest, WITH_COUNT)
    finally:
        progress.stream = None
    assert "all 4 stages reused" in buf.getvalue()


def test_the_step_flow_ships_to_ray_workers_without_the_tables_tests_register():
    """prefect-ray sends the step flow (its function by value, with what it names) to every Ray worker; a worker
    cannot import this test module, so the flow must not carry the table registry (which holds WITH_COUNT)."""
    import ray.cloudpickle

    from flows.train import train_step

    assert "test-with-count" in STEP_TABLES
    assert b"test_stage_table" not in ray.cloudpickle.dumps(train_step.with_options(name="shipped"))


@dataclass(frozen=True)
class RowsStats(StageStats):
    rows: int
    seconds: float


def test_reuse_follows_what_the_inputs_hold_timings_left_out(tmp_path):
    """`Stage.complete` is the one check of "done": outputs complete AND made from what the inputs hold now. A
    verdicts file written again with the same verdicts (only the wall-clock ``seconds`` differ) leaves the stage
    that reads it done; one verdict flipped makes it run again (before: reused, standing on verdicts that no longer
    exist). A record from before inputs were recorded counts as made from them."""
    passed: list[bool] = []
    calls: list[list[bool]] = []

    def run_verdicts(cfg, ctx: StageContext, checkpoint: str) -> RowsStats:
        rows = [{"step": 0, "prompt_index": i, "sample_index": 0, "problem_id": f"p{i}", "passed": p, "status": "x",
                 "detail": "", "reward": float(p), "tests_passed": 0, "tests_total": 0, "seconds": time.perf_counter()}
                for i, p in enumerate(passed)]
        stats = RowsStats(rows=len(rows), seconds=0.0)
        artifacts.write_rows(ctx.outputs["verdicts"], rows, schemas.VERDICTS, **ctx.record(stats))
        return stats

    def run_reader(cfg, ctx: StageContext, verdicts: str) -> RowsStats:
        calls.append(artifacts.read_table(verdicts).column("passed").to_pylist())
        stats = RowsStats(rows=len(calls[-1]), seconds=0.0)
        artifacts.write_rows(ctx.outputs["read"], [], COUNTS, **ctx.record(stats))
        return stats

    make = Stage("make", run_verdicts, RowsStats, inputs=("checkpoint",), outputs={"verdicts": "verdicts.parquet"})
    reader = Stage("reader", run_reader, RowsStats, inputs=("verdicts",), outputs={"read": "read.parquet"})
    run_dir, base = str(tmp_path / "run"), str(tmp_path / "base-model")  # a folder without a manifest
    verdicts = make.output_uris(run_dir, 0)["verdicts"]

    def step() -> bool:
        """Both stages as the flow runs them; True when the reader was reused."""
        run_stage(make, None, run_dir, 0, {"checkpoint": base}, StepStats())  # type: ignore[arg-type]
        return run_stage(reader, None, run_dir, 0, {"verdicts": verdicts}, StepStats()).reused  # type: ignore[arg-type]

    passed[:] = [True, False]
    assert not step() and step() and calls == [[True, False]]
    moved = str(tmp_path / "elsewhere" / "base-model")  # the same base model on another machine: the config fixes it
    assert run_stage(make, None, run_dir, 0, {"checkpoint": moved}, StepStats()).reused  # type: ignore[arg-type]
    first = artifacts.read_manifest(verdicts)
    artifacts.remove(verdicts)  # found damaged, say: written again, the same verdicts at other wall-clock times
    assert step() and calls == [[True, False]]
    again = artifacts.read_manifest(verdicts)
    assert again["sha256"] != first["sha256"] and again["content"] == first["content"]
    artifacts.remove(verdicts)
    passed[:] = [True, True]  # a timeout that went the other way
    assert not step() and calls == [[True, False], [True, True]]
    assert artifacts.read_manifest(reader.output_uris(run_dir, 0)["read"])["inputs"] == {
        "verdicts": ["step_0000/verdicts.parquet", artifacts.read_manifest(verdicts)["content"]]}  # a copy is done too
    assert artifacts.read_manifest(verdicts)["inputs"] == {"checkpoint": [base, "no manifest"]}

    record = reader.output_uris(run_dir, 0)["read"]
    legacy = {k: v for k, v in artifacts.read_manifest(record).items() if k not in ("inputs", "uri")}
    artifacts.write_manifest(record, **legacy)  # as written before inputs were recorded
    artifacts.remove(verdicts)
    passed[:] = [False, False]
    assert step() and len(calls) == 2


def test_the_prefect_cache_key_is_the_manifests(tmp_path):
    """`tasks.common.ManifestCache`: work that is not done gets the running task run's own key (no stored result can
    stand in for it); done work gets the key of the task run its record names (`stamp`), whichever run asks."""
    from types import SimpleNamespace

    from tasks.common import TASK_RUN_KEY, ManifestCache

    uri = str(tmp_path / "out.parquet")
    done = [False]
    policy = ManifestCache(done=lambda params: (uri, done[0]))

    def key(run_id: str) -> str | None:
        ctx = SimpleNamespace(task=SimpleNamespace(name="verify"), task_run=SimpleNamespace(id=run_id))
        return policy.compute_key(ctx, {}, {})  # type: ignore[arg-type]

    assert key("a") != key("b")  # not done: nothing to reuse
    artifacts.write_rows(uri, [], COUNTS)
    done[0] = True
    assert key("a") != key("b")  # done but named by no task run: the next run stores its result
    artifacts.annotate_manifest(uri, **{TASK_RUN_KEY: "a"})
    assert key("b") == key("c") == key("a")  # done: the stored result of the run that made it
    done[0] = False  # e.g. an input changed
    assert key("b") != key("a")
