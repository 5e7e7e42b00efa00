"""Config loading: every shipped config loads; bad keys and values fail naming the key and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from mel.config import Config, ConfigError, config_hash, default_run_dir, from_dict, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, Config)
    assert cfg.run.name == path.stem


def test_overrides_apply_and_are_typed():
    cfg = load_config(None, ["run.steps=5", "algorithm.kl_coef=0.1", "optimizer.betas=[0.8, 0.9]", "data.limit=null"])
    assert cfg.run.steps == 5 and cfg.algorithm.kl_coef == 0.1
    assert cfg.optimizer.betas == (0.8, 0.9) and cfg.data.limit is None


@pytest.mark.parametrize("raw,message", [
    ({"rollout": {"group_sise": 4}}, "rollout: unknown key(s) group_sise; known keys:"),
    ({"algorithm": {"loss_agg": "mean"}}, "algorithm.loss_agg: 'mean' is not allowed; choose one of 'token-mean'"),
    ({"rollout": {"group_size": 1}}, "rollout.group_size: must be at least 2"),
    ({"rollout": {"temperature": "hot"}}, "rollout.temperature: must be a number"),
    ({"trainer": {}}, "unknown section(s) trainer; known sections:"),
    ({"algorithm": {"micro_batch_size": 64, "mini_batch_size": 32}}, "algorithm.micro_batch_size: must be between"),
])
def test_bad_config_names_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert message in str(err.value)


def test_exponent_without_dot_is_a_number():
    assert load_config(None, ["optimizer.lr=1e-5"]).optimizer.lr == 1e-5  # YAML 1.1 reads "1e-5" as a string


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.field"):
        load_config(None, ["steps=3"])


def test_hash_ignores_fields_that_change_no_artifact():
    base = from_dict({})
    assert config_hash(base) == config_hash(from_dict({"run": {"steps": 9}, "verify": {"workers": 1}}))
    assert config_hash(base) != config_hash(from_dict({"optimizer": {"lr": 1e-5}}))
    assert default_run_dir(base) == f"runs/run-{config_hash(base)}"
