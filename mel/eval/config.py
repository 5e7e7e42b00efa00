"""``mel eval``'s settings (``configs/eval/*.yaml``): frozen, typed dataclasses read by the run config's loader
(`mel.config`), with the same errors for unknown keys and bad values."""
from __future__ import annotations

import os
import posixpath
import typing
from dataclasses import dataclass, field

from mel.config import ConfigError, DType, EngineName, VerifyConfig, check, coerce, read_yaml
from mel.eval.metrics import Sampling


@dataclass(frozen=True)
class GenerationConfig:
    """How ``mel eval`` generates from a model that is not a run's (a run's checkpoints use the run's own engine,
    dtype, chat template and system prompt)."""

    engine: EngineName = "transformers"
    """Generation engine (``mel.engines.ENGINES``)."""
    dtype: DType = "float32"
    """Weights dtype."""
    use_chat_template: bool = True
    """Wrap each prompt in the tokenizer's chat template as a user turn."""
    system_prompt: str | None = None
    """Optional system turn."""
    batch_size: int = 32
    """Sequences generated together."""
    max_new_tokens: int = 512
    """Generation budget per sample."""
    seed: int = 0
    """Sampling seed (each cell derives its own)."""

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "generation.batch_size", "at least 1")
        check(self.max_new_tokens >= 1, "generation.max_new_tokens", "at least 1")


PAPER_SAMPLINGS = (Sampling(temperature=0.0), Sampling(temperature=0.6, samples=8, ks=(8,)))
_REPO = posixpath.dirname(posixpath.dirname(posixpath.dirname(posixpath.abspath(__file__))))
DEFAULT_EVAL_CONFIG = posixpath.join(_REPO, "configs", "eval", "default.yaml")


@dataclass(frozen=True)
class EvalConfig:
    """``mel eval``'s settings (``configs/eval/default.yaml``; its flags override them)."""

    data_root: str | None = None
    """Where benchmark files live (each under its default name, see ``mel eval --list``); relative to the YAML file.
    ``MEL_DATA_ROOT`` overrides it."""
    paths: dict[str, str] = field(default_factory=dict)
    """Benchmark name -> its file (a path or fsspec URL), instead of ``data_root/<default file>``."""
    samplings: tuple[Sampling, ...] = PAPER_SAMPLINGS
    """How each benchmark is sampled (default: the papers' greedy Pass@1, then Avg@8 and Pass@8 at T = 0.6)."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Generation settings for models that are not a run's."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """The verifier's limits and sandbox, as for training."""


def load_eval_config(path: str | None = None) -> EvalConfig:
    """The eval settings in ``path`` (default: the repository's ``configs/eval/default.yaml`` when it exists), read
    like a run config: unknown keys and bad values fail naming the key and the allowed values."""
    if path is None and not os.path.exists(DEFAULT_EVAL_CONFIG):
        return EvalConfig(data_root=os.environ.get("MEL_DATA_ROOT"))
    path = str(path or DEFAULT_EVAL_CONFIG)
    raw, _ = read_yaml(path)
    hints = typing.get_type_hints(EvalConfig)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(hints))}")
    values = {k: coerce(v, hints[k], k) for k, v in raw.items() if v is not None}
    data_root = os.environ.get("MEL_DATA_ROOT") or values.get("data_root")
    if data_root and "://" not in data_root and not os.path.isabs(data_root):
        data_root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), data_root))
    values["data_root"] = data_root
    if not values.get("samplings"):
        values.pop("samplings", None)
    return EvalConfig(**values)
