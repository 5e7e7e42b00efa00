"""Meta-experience builders, registered by name (``mel.mel.builder``).

Each takes the step's pairs and returns, per pair, M (or the reason it is malformed), the retrospective context
C_retro that the NLL term conditions M on (as one user turn), and the tokens generated to build it.

- ``llm`` (MEL): the policy, given Appendix C's instruction I and (x, y+, y-), writes s*, C and H
  (``mel.experience.llm``); C_retro = [I, x, y+, y-] (MEL eq. 7).
- ``template`` (MEL-Code): diff-guided divergence category and templates (``mel.experience.template``), no
  generation; C_retro = [x, y+, y-, v-] (MEL-Code eq. 2 plus v-, the verifier's status and detail for y-, which M
  states: ``mel.experience.prompts.retro_context_code``), or [x, y-, v-] without a pair.
- ``self_critique`` (the Self-Critique NLL baseline of MEL-Code section 4.1): the policy critiques one failing
  rollout alone; C_retro = [I_sc, x, y-].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mel.config import MelConfig
from mel.data import Problem
from mel.engines.base import LazyEngine
from mel.experience.llm import generate_primed, parse_meta_experience
from mel.experience.prompts import meta_experience_prompt, retro_context_code, self_critique_prompt
from mel.experience.types import MetaExperience
from mel.registry import Registry


@dataclass(frozen=True)
class PairInput:
    problem: Problem
    y_plus: str | None  # None without contrast
    y_minus: str
    minus_status: str = "failed"
    minus_detail: str = ""


@dataclass(frozen=True)
class Built:
    experience: MetaExperience
    retro_prompt: str  # C_retro, the user turn M is conditioned on in the NLL term
    gen_tokens: int = 0  # tokens the policy generated to build M


@dataclass(frozen=True)
class BuildContext:
    """What a builder may use: the policy as a generation engine (built on first use) and the MEL settings."""

    policy: LazyEngine
    mel: MelConfig
    seed: int
    count_tokens: Callable[[str], int] | None = None
    """Tokens of a text under the policy's tokenizer (the template builder holds M to 50-80 of them)."""


BuilderFn = Callable[[Sequence[PairInput], BuildContext], list[Built]]
BUILDERS: Registry[BuilderFn] = Registry("meta-experience builder")


def problem_specifics(problem: Problem) -> tuple[str, ...]:
    """What a heuristic must not name (Appendix C): the function to write, or a math problem's exact answer."""
    if problem.kind == "code" and problem.tests is not None and problem.tests.entry_point:
        return (problem.tests.entry_point,)
    if problem.kind == "math" and problem.answer and len(problem.answer.strip()) >= 2:
        return (problem.answer.strip(),)
    return ()


def _policy_written(pairs: Sequence[PairInput], ctx: BuildContext, prompts: list[str]) -> list[Built]:
    if not pairs:
        return []
    outputs = generate_primed(ctx.policy.get(), prompts, ctx.mel.max_new_tokens, ctx.mel.temperature, ctx.seed)
    return [
        Built(parse_meta_experience(text, problem_specifics(p.problem)), prompt, tokens)
        for p, prompt, (text, tokens) in zip(pairs, prompts, outputs)
    ]


@BUILDERS.register("llm")
def build_llm(pairs: Sequence[PairInput], ctx: BuildContext) -> list[Built]:
    missing = [i for i, p in enumerate(pairs) if p.y_plus is None]
    if missing:
        raise ValueError(f"the llm builder needs (y+, y-) pairs; pair rows {missing} have no y+ "
                         "(use mel.builder=self_critique or template for mel.contrastive=false)")
    prompts = [meta_experience_prompt(p.problem.prompt, p.y_plus or "", p.y_minus) for p in pairs]
    return _policy_written(pairs, ctx, prompts)


@BUILDERS.register("self_critique")
def build_self_critique(pairs: Sequence[PairInput], ctx: BuildContext) -> list[Built]:
    prompts = [self_critique_prompt(p.problem.prompt, p.y_minus) for p in pairs]
    return _policy_written(pairs, ctx, prompts)


@BUILDERS.register("template")
def build_from_template(pairs: Sequence[PairInput], ctx: BuildContext) -> list[Built]:
    from mel.experience.template import build_template

    return [
        Built(
            build_template(p.problem.prompt, p.y_plus, p.y_minus, p.minus_status, p.minus_detail,
                           bifurcation=ctx.mel.bifurcation, count_tokens=ctx.count_tokens),
            retro_context_code(p.problem.prompt, p.y_plus, p.y_minus, p.minus_status, p.minus_detail),
        )
        for p in pairs
    ]
