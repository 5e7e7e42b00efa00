"""What a meta-experience is, and the one text form it takes in replay prompts and in the NLL target."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetaExperience:
    """M = (s*, C, H) (MEL eq. 5), or the reason a builder could not make one.

    ``bifurcation_step``: s*, where y- leaves the path y+ stays on; ``critique``: C, the root cause of y-'s failure
    against y+; ``heuristic``: H, the lesson stated for the problem class; ``category``: the template builder's
    divergence category ("" for LLM-written ones). ``reject_reason`` is non-empty when the builder's output was
    malformed; such an M is kept in the artifacts (for reading) but never replayed or trained on."""

    bifurcation_step: str
    critique: str
    heuristic: str
    category: str = ""
    reject_reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reject_reason

    def render(self) -> str:
        """The text of M: the replay prompt's ``{experience}`` and the NLL target."""
        return render_experience(self.bifurcation_step, self.critique, self.heuristic)


FIELD_LABELS = ("Bifurcation step", "Critique", "Heuristic")


def render_experience(bifurcation_step: str, critique: str, heuristic: str) -> str:
    values = (bifurcation_step, critique, heuristic)
    return "\n".join(f"{label}: {value.strip()}" for label, value in zip(FIELD_LABELS, values))
