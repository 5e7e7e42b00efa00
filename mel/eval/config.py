"""Evaluation settings (``configs/eval/default.yaml``): where benchmark files are, how to sample, verify limits.

The YAML holds ``data_root`` (where benchmark files live; relative to the YAML file; ``MEL_DATA_ROOT`` overrides it),
``paths`` (benchmark -> file, a path or fsspec URL, overriding ``data_root/<the benchmark's default file>``),
``samplings`` (the papers': greedy Pass@1, and Avg@8 / Pass@8 at T = 0.6), ``generation`` and ``verify``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from mel.eval.metrics import Sampling
from mel.stages.evaluate import GenerationSettings, VerifySettings

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "eval" / "default.yaml"
PAPER_SAMPLINGS = (Sampling(temperature=0.0), Sampling(temperature=0.6, samples=8, ks=(8,)))


@dataclass(frozen=True)
class EvalConfig:
    data_root: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    samplings: tuple[Sampling, ...] = PAPER_SAMPLINGS
    generation: GenerationSettings = GenerationSettings()
    verify: VerifySettings = VerifySettings()


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**raw)


def load_eval_config(path: str | Path | None = None) -> EvalConfig:
    """The eval settings in ``path`` (default: the repository's ``configs/eval/default.yaml`` when it exists)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.exists():
        if path == DEFAULT_CONFIG:
            return EvalConfig(data_root=os.environ.get("MEL_DATA_ROOT"))
        raise FileNotFoundError(f"eval config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a YAML mapping")
    unknown = sorted(set(raw) - {f.name for f in fields(EvalConfig)})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}")
    data_root = os.environ.get("MEL_DATA_ROOT") or raw.get("data_root")
    if data_root and "://" not in data_root and not os.path.isabs(data_root):
        data_root = str((path.parent / data_root).resolve())
    paths = {str(k): str(v) for k, v in (raw.get("paths") or {}).items()}
    samplings = tuple(_section(Sampling, s, f"{path}: samplings[{i}]") for i, s in enumerate(raw.get("samplings")
                                                                                             or ()))
    samplings = tuple(replace(s, ks=tuple(s.ks)) for s in samplings) or PAPER_SAMPLINGS
    return EvalConfig(data_root=data_root, paths=paths, samplings=samplings,
                      generation=_section(GenerationSettings, raw.get("generation"), f"{path}: generation"),
                      verify=_section(VerifySettings, raw.get("verify"), f"{path}: verify"))


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
