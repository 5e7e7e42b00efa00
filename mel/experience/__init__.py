"""Meta-Experience Learning, the pure parts: pairs, meta-experience builders, replay validation, prompts.

A step's flow: ``pairs.draw_pairs`` per group -> a builder from ``BUILDERS`` (llm / template / self_critique) makes
M = (s*, C, H) per pair -> a replay mode from ``REPLAYS`` (in_context / reexecute / none) keeps or drops each M ->
the update adds the NLL of the kept M given C_retro (``mel.algos.nll``). The stages in ``mel.stages`` do the I/O.
"""
from mel.experience.builders import BUILDERS, BuildContext, Built, PairInput, problem_specifics
from mel.experience.pairs import Pair, draw_pairs, group_outcomes, p_pair
from mel.experience.replay import REPLAYS, ReplayContext, ReplayInput, ReplayOutcome
from mel.experience.types import FIELD_LABELS, MetaExperience, render_experience

__all__ = [
    "BUILDERS", "BuildContext", "Built", "FIELD_LABELS", "MetaExperience", "Pair", "PairInput", "REPLAYS",
    "ReplayContext", "ReplayInput", "ReplayOutcome", "draw_pairs", "group_outcomes", "p_pair", "problem_specifics",
    "render_experience",
]
