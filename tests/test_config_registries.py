"""Every config ``Literal`` that names a registered variant lists exactly the registry's names: a variant added to
one and not the other fails here, not in the middle of a run."""
from __future__ import annotations

import typing

import pytest

from mel import config
from mel.algos.base import BASE_ALGORITHMS
from mel.algos.losses import LOSS_AGGREGATIONS
from mel.engines.base import ENGINES
from mel.experience.builders import BUILDERS
from mel.experience.replay import REPLAYS
from mel.verify.sandbox import ISOLATIONS


def _choices(tp) -> set[str]:
    assert typing.get_origin(tp) is typing.Literal, tp
    return set(typing.get_args(tp))


def _field(cls, name: str):
    return typing.get_type_hints(cls)[name]


CASES = {
    "algorithm.name": (_field(config.AlgorithmConfig, "name"), set(BASE_ALGORITHMS.names())),
    "algorithm.loss_agg": (_field(config.AlgorithmConfig, "loss_agg"), set(LOSS_AGGREGATIONS.names())),
    "rollout.engine": (_field(config.RolloutConfig, "engine"), set(ENGINES.names())),
    "mel.builder": (_field(config.MelConfig, "builder"), set(BUILDERS.names()) | {"none"}),
    "mel.replay": (_field(config.MelConfig, "replay"), set(REPLAYS.names())),
    "verify.isolation": (_field(config.VerifyConfig, "isolation"), set(ISOLATIONS)),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_literal_matches_registry(key: str) -> None:
    literal, registered = CASES[key]
    assert _choices(literal) == registered, f"{key}: config allows {sorted(_choices(literal))}, registry has " \
        f"{sorted(registered)}"
