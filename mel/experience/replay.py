"""Replay validation, registered by name (``mel.mel.replay``): which well-formed meta-experiences are kept.

- ``in_context`` (MEL eq. 6): the policy re-attempts x with M in the prompt (Appendix C's empirical validation
  prompt); M is kept iff a replay passes the verifier (``replay_samples`` replays, at least one must pass).
- ``reexecute`` (MEL-Code eq. 1): y+ and y- are run again on the unit tests; M is kept iff y+ passes and y- fails.
  Without a pair (the no-contrastive ablation) M is kept iff y- fails again (the failure it explains is real).
- ``none``: every well-formed M is kept (the no-replay ablation, the Self-Critique baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mel.data import Problem
from mel.engines.base import LazyEngine
from mel.experience.prompts import validation_prompt
from mel.registry import Registry
from mel.verify.types import Verdict


@dataclass(frozen=True)
class ReplayInput:
    problem: Problem
    y_plus: str | None
    y_minus: str
    experience_text: str


@dataclass(frozen=True)
class ReplayOutcome:
    accepted: bool
    status: str  # the deciding verdict's status ("passed", "failed", ...), or "not_replayed"
    detail: str = ""
    completion: str = ""  # in_context: the replay (the passing one if any)
    gen_tokens: int = 0


VerifyFn = Callable[[Sequence[Problem], Sequence[str]], list[Verdict]]


@dataclass(frozen=True)
class ReplayContext:
    policy: LazyEngine  # the step's policy (built on first use: only in_context replay generates)
    verify: VerifyFn
    samples: int
    temperature: float
    max_new_tokens: int
    seed: int


ReplayFn = Callable[[Sequence[ReplayInput], ReplayContext], list[ReplayOutcome]]
REPLAYS: Registry[ReplayFn] = Registry("replay validation")


@REPLAYS.register("none")
def replay_none(items: Sequence[ReplayInput], ctx: ReplayContext) -> list[ReplayOutcome]:
    return [ReplayOutcome(True, "not_replayed") for _ in items]


@REPLAYS.register("in_context")
def replay_in_context(items: Sequence[ReplayInput], ctx: ReplayContext) -> list[ReplayOutcome]:
    if not items:
        return []
    prompts = [validation_prompt(it.experience_text, it.problem.prompt) for it in items]
    results = ctx.policy.get().generate(prompts, n=ctx.samples, temperature=ctx.temperature,
                                  max_tokens=ctx.max_new_tokens, seed=ctx.seed)
    problems = [it.problem for it in items for _ in range(ctx.samples)]
    completions = [s.text for r in results for s in r.samples]
    verdicts = ctx.verify(problems, completions)
    outcomes = []
    for i, r in enumerate(results):
        vs = verdicts[i * ctx.samples:(i + 1) * ctx.samples]
        best = next((j for j, v in enumerate(vs) if v.passed), 0)
        tokens = sum(len(s.token_ids) for s in r.samples)
        outcomes.append(ReplayOutcome(vs[best].passed, vs[best].status, vs[best].detail[:500],
                                      r.samples[best].text, tokens))
    return outcomes


@REPLAYS.register("reexecute")
def replay_reexecute(items: Sequence[ReplayInput], ctx: ReplayContext) -> list[ReplayOutcome]:
    problems: list[Problem] = []
    completions: list[str] = []
    for it in items:
        if it.y_plus is not None:
            problems.append(it.problem)
            completions.append(it.y_plus)
        problems.append(it.problem)
        completions.append(it.y_minus)
    verdicts = iter(ctx.verify(problems, completions)) if problems else iter(())
    outcomes = []
    for it in items:
        plus = next(verdicts) if it.y_plus is not None else None
        minus = next(verdicts)
        ok = (plus is None or plus.passed) and not minus.passed
        plus_s = f"y+ {plus.status}, " if plus is not None else ""
        status = "passed" if ok else (plus.status if plus is not None and not plus.passed else "y-_passed")
        detail = f"{plus_s}y- {minus.status}" + (f": {minus.detail[:300]}" if minus.detail else "")
        outcomes.append(ReplayOutcome(ok, status, detail))
    return outcomes
