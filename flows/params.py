"""The typed parameters of the deployed flows, as the Prefect UI's Run form shows them: the shipped configs and
methods as choices, numbers with their bounds. (Their descriptions come from each flow's docstring ``Args:``.)

A file parameter is a shipped file (a choice) or any other path (free text): the deployment enforces its parameter
schema, so a plain choice list would refuse a user's own config or sweep file.
"""
from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field

ShippedConfig = Literal["configs/demo.yaml", "configs/tiny.yaml"]
SHIPPED_CONFIGS = typing.get_args(ShippedConfig)
"""The base configs under ``configs/`` (a test checks this list against the files)."""

MethodName = Literal["grpo", "grpo_code", "mel", "mel_code", "mel_code_bifurcation_skip", "mel_code_no_contrastive",
                     "mel_code_no_replay", "mel_extra", "mel_extra_code", "reinforcepp_me", "rft_me", "rmel",
                     "rmel_b1", "rmel_code", "rmel_code_b1", "rmel_code_tau0", "rmel_tau0", "self_critique"]
"""The method files under ``configs/methods/`` (a test checks this list against the files)."""

BenchmarkName = Literal["aime24", "aime25", "amc23", "easy_code", "easy_code_heldout", "easy_code_train", "easy_math",
                        "gsm8k", "humaneval", "humaneval_plus", "jsonl", "math500", "mbpp", "mbpp_plus", "mbpp_train",
                        "olympiadbench", "toy_regex"]
"""The benchmarks of ``mel.eval.benchmarks.BENCHMARKS`` (a test checks this list against the registry)."""

ShippedSweep = Literal["configs/sweeps/learning.yaml", "configs/sweeps/nightly_tiny.yaml",
                       "configs/sweeps/rescue.yaml", "configs/sweeps/weekly_seeds.yaml"]
SHIPPED_SWEEPS = typing.get_args(ShippedSweep)
"""The sweep files under ``configs/sweeps/`` (a test checks this list against the files)."""

# A shipped file (the Run form's choices) or any other path: the form offers both, the API accepts both.
ConfigPath = ShippedConfig | str
SweepPath = ShippedSweep | str
Steps = Annotated[int | None, Field(ge=1)]
Seed = Annotated[int | None, Field(ge=0)]


def overrides_for(method: str | None, steps: int | None, seed: int | None) -> tuple[str | None, list[str]]:
    """The method file (laid over the config) and the ``section.field=value`` overrides the typed fields stand for."""
    extra = [*([f"run.steps={steps}"] if steps is not None else []),
             *([f"run.seed={seed}"] if seed is not None else [])]
    return (f"configs/methods/{method}.yaml" if method else None), extra
