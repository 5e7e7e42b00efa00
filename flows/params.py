"""The typed parameters of the deployed flows, as the Prefect UI's Run form shows them: the shipped configs and
methods as choices, numbers with their bounds. (Their descriptions come from each flow's docstring ``Args:``.)

Called from Python (the CLI, tests) ``config_path`` takes any YAML path; the choices bind the Run form and runs
created through the API (the deployment enforces its parameter schema).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

SHIPPED_CONFIGS = ("configs/demo.yaml", "configs/tiny.yaml")
"""The base configs under ``configs/`` (a test checks this list against the files)."""

MethodName = Literal["grpo", "mel", "mel_code", "mel_code_bifurcation_skip", "mel_code_no_contrastive",
                     "mel_code_no_replay", "mel_extra", "reinforcepp_me", "rft_me", "rmel", "rmel_b1", "rmel_tau0",
                     "self_critique"]
"""The method files under ``configs/methods/`` (a test checks this list against the files)."""

BenchmarkName = Literal["aime24", "aime25", "amc23", "easy_code", "gsm8k", "humaneval", "humaneval_plus", "jsonl",
                        "math500", "mbpp", "mbpp_plus", "mbpp_train", "olympiadbench", "toy_regex"]
"""The benchmarks of ``mel.eval.benchmarks.BENCHMARKS`` (a test checks this list against the registry)."""

SHIPPED_SWEEPS = ("configs/sweeps/nightly_tiny.yaml", "configs/sweeps/weekly_seeds.yaml")
"""The sweep files under ``configs/sweeps/`` (a test checks this list against the files)."""

ConfigPath = Annotated[str, Field(json_schema_extra={"enum": list(SHIPPED_CONFIGS)})]
SweepPath = Annotated[str, Field(json_schema_extra={"enum": list(SHIPPED_SWEEPS)})]
Steps = Annotated[int | None, Field(ge=1)]
Seed = Annotated[int | None, Field(ge=0)]


def overrides_for(method: str | None, steps: int | None, seed: int | None) -> tuple[str | None, list[str]]:
    """The method file (laid over the config) and the ``section.field=value`` overrides the typed fields stand for."""
    extra = [*([f"run.steps={steps}"] if steps is not None else []), *([f"run.seed={seed}"] if seed is not None else [])]
    return (f"configs/methods/{method}.yaml" if method else None), extra
