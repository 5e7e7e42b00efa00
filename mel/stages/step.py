"""What a stage of a step is, and how a step runs from a table of them (the table itself: `mel.stages.table`).

A ``Stage`` is declared once, as data: its name, its core function, the artifact roles it reads, the roles it writes
(role -> file name under ``step_NNNN/``), the condition on the ``Config`` that enables it, the resources it needs and
its typed stats record. A ``StepTable`` is the ordered list of a step's stages; the flow (``flows/train.py``), the
resume check (``completed_run_metrics``), the CLI's reused-stage listing, the progress lines and the metrics row are
all derived from it, so adding a stage is one entry in the table and one module.

Artifact roles: a step starts with the role ``checkpoint`` (the policy that samples it); each enabled stage adds its
output roles, and a later stage that writes a role already there replaces it for the stages after it (revise writes
``pairs`` as ``revised_pairs.parquet``, so extract reads the revised pairs when revise ran; update writes the next
``checkpoint``).

A stage function is ``fn(cfg, ctx, **inputs) -> stats``: one keyword argument per input role (its URI, or None for an
optional role no enabled stage produced), ``ctx`` a ``StageContext`` (the step, this stage's output URIs, the stats of
the step's earlier stages). It writes every output, its first output (the *record*) last, with its stats in that
manifest (``stats.manifest()``: one key, ``"stats"``, whose fields are the dataclass's). A stage whose outputs are
all complete is not called again: ``run_stage`` rebuilds its stats from the record's manifest.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Protocol, TypeVar

import pyarrow as pa

from mel import artifacts
from mel.config import Config

S = TypeVar("S", bound="StageStats")


class StageStats:
    """Base of a stage's stats record: subclasses are frozen dataclasses whose fields are the record's schema (JSON
    scalars, lists or dicts), with a ``seconds`` field and a one-line ``summary()`` for the progress output.

    A stage's columns in the step's metrics row (``update.parquet``, the run's ``metrics.parquet``) are its own:
    ``metric_columns`` declares them (Arrow fields) and ``metrics()`` gives their values; the row is the merge of the
    step's records (`StepStats.metrics_row`), the columns of a stage that did not run are null."""

    seconds: float
    metric_columns: ClassVar[tuple[pa.Field, ...]] = ()

    def summary(self) -> str:
        return ""

    def metrics(self, step: "StepStats") -> dict[str, Any]:
        """The values of ``metric_columns``; ``step`` is the step's records (a column may count another stage's work
        too: the extract column's seconds include the pairing's)."""
        return {}

    def manifest(self) -> dict[str, Any]:
        """The manifest entry that records these stats: ``{"stats": {field: value, ...}}``."""
        return {"stats": dataclasses.asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_manifest(cls: type[S], uri: str, manifest: Mapping[str, Any]) -> S:
        """The stats recorded in ``manifest`` (that of ``uri``); an error if they are missing or have other fields."""
        recorded = manifest.get("stats")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        if not isinstance(recorded, dict) or sorted(recorded) != sorted(names):
            raise ValueError(
                f"{uri}: its manifest's stats ({sorted(recorded) if isinstance(recorded, dict) else recorded!r}) are "
                f"not a {cls.__name__} ({', '.join(names)}): written by another version of mel; remove that step's "
                "artifacts or use another --run-dir"
            )
        return cls(**recorded)


@dataclass(frozen=True)
class StepStats:
    """The stats records of a step's stages so far, in run order, looked up by their type."""

    records: tuple[tuple[str, StageStats], ...] = ()

    def add(self, stage: str, stats: StageStats) -> "StepStats":
        return StepStats(self.records + ((stage, stats),))

    def get(self, kind: type[S]) -> S | None:
        """The record of type ``kind``, None when no stage of this step recorded one (a disabled stage)."""
        found = [s for _, s in self.records if type(s) is kind]
        return found[-1] if found else None  # type: ignore[return-value]

    def require(self, kind: type[S]) -> S:
        found = self.get(kind)
        if found is None:
            raise LookupError(f"no {kind.__name__} among this step's stages ({', '.join(self.stages()) or 'none'})")
        return found

    def stages(self) -> list[str]:
        return [name for name, _ in self.records]

    def to_record(self) -> dict[str, dict[str, Any]]:
        """``{stage: {field: value}}``, JSON-ready (kept in ``update.parquet``'s manifest as ``step_stats``)."""
        return {name: dataclasses.asdict(s) for name, s in self.records}  # type: ignore[call-overload]

    def metrics_row(self, step: int) -> dict[str, Any]:
        """The step's metrics row: ``step``, then each record's ``metrics()``, in run order (the columns of
        `metrics_schema`)."""
        row: dict[str, Any] = {STEP_COLUMN.name: step}
        for _, stats in self.records:
            values = stats.metrics(self)
            declared = [f.name for f in stats.metric_columns]
            if sorted(values) != sorted(declared):
                raise TypeError(f"{type(stats).__name__}.metrics() gave {sorted(values)}, not its metric_columns "
                                f"{sorted(declared)}")
            row.update((name, values[name]) for name in declared)
        return row

    def metrics_schema(self) -> pa.Schema:
        """The columns of `metrics_row`: those of the stages that ran."""
        return metrics_schema(type(s) for _, s in self.records)


STEP_COLUMN = pa.field("step", pa.int32())


def metrics_schema(kinds: Iterable[type[StageStats]]) -> pa.Schema:
    """``step``, then the ``metric_columns`` of each stats record kind in order (an error if two declare a name)."""
    fields, owner = [STEP_COLUMN], {STEP_COLUMN.name: "the step"}
    for kind in kinds:
        for f in kind.metric_columns:
            if f.name in owner:
                raise ValueError(f"metrics column {f.name!r} of {kind.__name__} is also {owner[f.name]}'s")
            owner[f.name] = kind.__name__
            fields.append(f)
    return pa.schema(fields)


def read_metrics(uri: str, schema: pa.Schema) -> pa.Table:
    """Metrics rows (a step's ``update.parquet``, a run's ``metrics.parquet``) as ``schema``'s columns: a column of a
    stage that did not run is null; columns are matched by name, so a file written in another column order (before
    stages declared their columns) reads the same. An error names a column no stage of the table declares."""
    table = artifacts.read_table(uri)
    extra = sorted(set(table.column_names) - set(schema.names))
    if extra:
        raise ValueError(f"{uri}: metrics columns {extra} belong to no stage of this step table")
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class Fanout(Protocol):
    """How a stage spreads independent work: ``map(fn, items)`` returns ``fn(items)`` (``fn`` a picklable function
    of a list returning one result per item, in order). In the flow's process it is one call (``IN_PROCESS``); on a
    Ray cluster (`tasks.cluster.RayFanout`) the items go out in chunks, one Ray task each, and ``placements()`` says
    where each chunk ran (recorded in the stage's manifest)."""

    def map(self, fn: Callable[[list], list], items: list) -> list: ...

    def placements(self) -> list[dict[str, Any]]: ...


class InProcess:
    def map(self, fn: Callable[[list], list], items: list) -> list:
        return list(fn(items)) if items else []

    def placements(self) -> list[dict[str, Any]]:
        return []


IN_PROCESS = InProcess()


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets besides the config and its input URIs."""

    step: int
    outputs: Mapping[str, str]  # role -> URI of each of this stage's outputs
    upstream: StepStats  # the stats of the step's earlier stages
    fanout: Fanout = IN_PROCESS  # where independent work (verification) goes
    inputs: Mapping[str, list[str]] = field(default_factory=dict)  # `provenance` of the inputs it was called with

    def record(self, stats: StageStats) -> dict[str, Any]:
        """The manifest keys of the stage's record: its stats and what its inputs held (`Stage.complete`)."""
        return {**stats.manifest(), "inputs": dict(self.inputs)}


@dataclass(frozen=True)
class StageResult:
    """A stage's outcome as the flow sees it: its outputs' URIs, its stats, and whether it was reused."""

    stage: str
    step: int
    outputs: Mapping[str, str]  # role -> URI
    stats: StageStats
    reused: bool = False  # its outputs were already complete; nothing was recomputed
    notes: tuple[str, ...] = ()  # what else its work did, for the progress output (`NOTES`)

    @property
    def uri(self) -> str:
        """The record: the first output, whose manifest holds the stats."""
        return next(iter(self.outputs.values()))

    @property
    def summary(self) -> str:
        return self.stats.summary()


@dataclass(frozen=True)
class Resources:
    """What a stage needs where it runs (for a scheduler such as Ray: ``remote_options()``)."""

    gpu: bool = False  # runs the policy (generation or training): on the accelerator when the run has one
    cpus: int = 1

    def remote_options(self) -> dict[str, int]:
        """Ray's resource request (prefect-ray ``remote_options(**...)``)."""
        return {"num_gpus": int(self.gpu), "num_cpus": self.cpus}


def always(cfg: Config) -> bool:
    return True


@dataclass(frozen=True)
class Report:
    """A Markdown report of a stage's outputs, published where the orchestrator shows artifacts (Prefect's UI)."""

    key: str
    markdown: str
    description: str


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a step, declared once (see the module docstring)."""

    name: str
    fn: Callable[..., StageStats]  # fn(cfg, ctx, **inputs) -> stats
    stats: type[StageStats]
    inputs: tuple[str, ...]  # roles it reads
    outputs: Mapping[str, str]  # role -> name under step_NNNN/; the first is the record, written last
    enabled: Callable[[Config], bool] = always
    optional: tuple[str, ...] = ()  # roles it reads when an enabled stage produced them (else None)
    resources: Resources = field(default_factory=Resources)
    report: Callable[[StageResult], Report] | None = None

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError(f"stage {self.name!r} declares no outputs")
        if not (dataclasses.is_dataclass(self.stats) and issubclass(self.stats, StageStats)
                and self.stats.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise TypeError(f"stage {self.name!r}: stats {self.stats!r} is not a frozen StageStats dataclass")
        params = list(inspect.signature(self.fn).parameters)
        expected = ["cfg", "ctx", *self.inputs, *self.optional]
        if params != expected:
            raise TypeError(f"stage {self.name!r}: {self.fn.__qualname__}{tuple(params)} does not take "
                            f"{tuple(expected)} (cfg, ctx, then its input roles in order)")

    def output_uris(self, run_dir: str, step: int) -> dict[str, str]:
        base = step_dir(run_dir, step)
        return {role: artifacts.join(base, name) for role, name in self.outputs.items()}

    def complete(self, run_dir: str, step: int, inputs: Mapping[str, str | None]) -> bool:
        """THE check of "already done" (the run's resume check, `run_stage` and the Prefect cache all ask it): every
        output complete (manifest written, data matching it), and the record made from what ``inputs`` hold now
        (`provenance`: each input's content, timings left out, compared role by role; the URIs are kept for the
        record). A record from before inputs were recorded counts as made from them."""
        outputs = self.output_uris(run_dir, step)
        if not all(artifacts.is_complete(u) for u in outputs.values()):
            return False
        recorded = artifacts.read_manifest(next(iter(outputs.values()))).get("inputs")
        if recorded is None:
            return True
        now = provenance(inputs, run_dir)  # compared by content: a URI (the base model's folder) may move
        return sorted(recorded) == sorted(now) and all(recorded[role][1] == now[role][1] for role in now)


def provenance(inputs: Mapping[str, str | None], run_dir: str) -> dict[str, list[str]]:
    """``{role: [uri, content]}`` of a stage's inputs (`mel.artifacts.content_id`; the URI relative to ``run_dir``
    when inside it, so that a copied run directory is still done; an optional role no stage wrote is left out), as
    its record's manifest keeps them (``inputs``)."""
    return {role: [artifacts.relative_to(uri, run_dir), artifacts.content_id(uri)]
            for role, uri in sorted(inputs.items()) if uri is not None}


class StepTable:
    """The ordered stages of a step; ``inputs`` are the roles a step starts with, ``results`` the roles it must
    end with (the flow carries them to the next step and the run's metrics)."""

    def __init__(self, *stages: Stage, inputs: tuple[str, ...] = ("checkpoint",),
                 results: tuple[str, ...] = ("metrics", "checkpoint")) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat: {names}")
        self.stages, self.inputs, self.results = tuple(stages), inputs, results
        self._check_wiring(stages)
        self.metrics = metrics_schema(s.stats for s in stages)  # metrics.parquet's columns

    def _check_wiring(self, stages) -> list[Stage]:
        """Each stage's inputs come from the step's inputs or an earlier stage; the step ends with its results."""
        have = set(self.inputs)
        for s in stages:
            missing = [r for r in s.inputs if r not in have]
            if missing:
                raise ValueError(f"stage {s.name!r} reads {missing}, which no earlier stage of "
                                 f"[{', '.join(x.name for x in stages)}] writes")
            have |= set(s.outputs)
        if not set(self.results) <= have:
            raise ValueError(f"no stage of [{', '.join(x.name for x in stages)}] writes "
                             f"{sorted(set(self.results) - have)}")
        return list(stages)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def enabled(self, cfg: Config) -> list[Stage]:
        """The stages this config runs, in order (an error if one of them would lack an input)."""
        return self._check_wiring([s for s in self.stages if s.enabled(cfg)])

    def names(self, cfg: Config) -> list[str]:
        return [s.name for s in self.enabled(cfg)]

    def producer(self, role: str, cfg: Config | None = None) -> Stage | None:
        """The stage whose output ``role`` the rest of the step sees: the last enabled one writing it (with ``cfg``);
        without ``cfg`` the only one writing it (an error if several do)."""
        writers = [s for s in (self.enabled(cfg) if cfg is not None else self.stages) if role in s.outputs]
        if cfg is None and len(writers) > 1:
            raise ValueError(f"{', '.join(s.name for s in writers)} all write {role!r}: pass the config")
        return writers[-1] if writers else None

    def uri(self, run_dir: str, step: int, role: str, cfg: Config | None = None) -> str:
        """Where step ``step``'s artifact ``role`` lives (see ``producer``)."""
        stage = self.producer(role, cfg)
        if stage is None:
            raise KeyError(f"no stage writes {role!r}")
        return stage.output_uris(run_dir, step)[role]


NOTES: list[str] = []
"""Lines that a stage's work adds for the progress output while it runs (e.g. an update replayed to rebuild the
trained state, `mel.stages.policy`): ``run_stage`` hands them on in the ``StageResult`` and the record's manifest,
so that they reach the flow's output from wherever the stage ran (a Ray worker)."""


def step_dir(run_dir: str, step: int) -> str:
    return artifacts.join(run_dir, f"step_{step:04d}")


def run_stage(stage: Stage, cfg: Config, run_dir: str, step: int, inputs: Mapping[str, str | None],
              upstream: StepStats, fanout: Fanout = IN_PROCESS,
              placement: Mapping[str, Any] | None = None) -> StageResult:
    """Run one stage, or reuse it when all its outputs are complete (its stats then come from its record).
    ``placement`` (where this call runs: node, resources; given on a cluster) is added to the record's manifest
    with the fanout's chunk placements."""
    outputs = stage.output_uris(run_dir, step)
    record = next(iter(outputs.values()))
    if stage.complete(run_dir, step, inputs):
        stats = stage.stats.from_manifest(record, artifacts.read_manifest(record))
        return StageResult(stage.name, step, outputs, stats, reused=True)
    NOTES.clear()
    stats = stage.fn(cfg, StageContext(step, outputs, upstream, fanout, provenance(inputs, run_dir)), **inputs)
    if type(stats) is not stage.stats:
        raise TypeError(f"stage {stage.name!r} returned {type(stats).__name__}, not its {stage.stats.__name__}")
    notes = tuple(NOTES)
    NOTES.clear()
    if notes:
        artifacts.annotate_manifest(record, notes=list(notes))
    if placement is not None:
        chunks = fanout.placements()
        artifacts.annotate_manifest(record, placement={**placement, **({"chunks": chunks} if chunks else {})})
    return StageResult(stage.name, step, outputs, stats, notes=notes)


def _recorded_uri(stages: list[Stage], run_dir: str, role: str) -> str:
    """The URI step 0's first stage reading ``role`` recorded for it ("" when it has no record of it)."""
    for s in stages:
        record = next(iter(s.output_uris(run_dir, 0).values()))
        if role in s.inputs and artifacts.is_complete(record):
            return artifacts.resolve((artifacts.read_manifest(record).get("inputs") or {}).get(role, [""])[0], run_dir)
    return ""


def stage_inputs(stage: Stage, available: Mapping[str, str]) -> dict[str, str | None]:
    """The URIs of ``stage``'s input roles among the step's artifacts so far (optional ones None when absent)."""
    return {**{r: available[r] for r in stage.inputs}, **{r: available.get(r) for r in stage.optional}}


def completed_run_metrics(table: StepTable, run_dir: str, config_hash: str, steps: int) -> list[dict] | None:
    """The run's per-step metrics if every enabled stage of all ``steps`` steps is done under ``run_dir`` for this
    config (`Stage.complete`, each with the inputs the flow would give it); None if anything is left (then the flow
    has work to do)."""
    from mel.config import load_config

    config_uri = artifacts.join(run_dir, "config.yaml")
    if not artifacts.is_complete(config_uri) or artifacts.read_manifest(config_uri).get("config_hash") != config_hash:
        return None
    cfg = load_config(config_uri)
    stages = table.enabled(cfg)
    for step in range(steps):
        # the step's input: the base model (as step 0's records name it: the config fixes it) or the last checkpoint
        available = {role: table.uri(run_dir, step - 1, role, cfg) if step else _recorded_uri(stages, run_dir, role)
                     for role in table.inputs}
        for s in stages:
            if not s.complete(run_dir, step, stage_inputs(s, available)):
                return None
            available.update(s.output_uris(run_dir, step))
    metrics_uri = artifacts.join(run_dir, "metrics.parquet")
    if not artifacts.is_complete(metrics_uri) or artifacts.read_manifest(metrics_uri).get("steps") != steps:
        return None
    return read_metrics(metrics_uri, table.metrics).to_pylist()
