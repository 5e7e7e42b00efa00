"""Config loading: every shipped config loads; bad keys and values fail naming the key and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from mel.config import Config, ConfigError, config_hash, default_run_dir, from_dict, load_config, unhashed_fields
from mel.eval.config import PAPER_SAMPLINGS, EvalConfig, load_eval_config

ROOT = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(ROOT.glob("*.yaml"))
EVERY_YAML = sorted(ROOT.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, Config)
    assert cfg.run.name == path.stem


@pytest.mark.parametrize("path", EVERY_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_under_configs_loads(path):
    """Run configs (methods through their ``base:`` chain), eval configs and sweep files (every cell's config),
    through the one config system."""
    if path.parent.name == "eval":
        assert isinstance(load_eval_config(str(path)), EvalConfig)
    elif path.parent.name == "sweeps":
        from mel.sweeps import load_sweep, plan_sweep

        assert plan_sweep(load_sweep(str(path)))
    else:
        assert isinstance(load_config(str(path)), Config)


def test_eval_config_errors_name_the_key_and_the_allowed_values(tmp_path):
    bad = tmp_path / "eval.yaml"
    for text, message in [
        ("generation: {engine: jax}", "generation.engine: 'jax' is not allowed; choose one of 'transformers', 'vllm'"),
        ("verify: {isolation: chroot}", "verify.isolation: 'chroot' is not allowed"),
        ("verify: {timeout: 3}", "verify: unknown key(s) timeout"),
        ("samplings: [{temperature: 0.0, samples: 4}]", "samplings[0]: greedy sampling"),
        ("samplings: [{temperature: hot}]", "samplings[0].temperature: must be a number"),
        ("paths: {gsm8k: 3}", "paths.gsm8k: must be a string"),
        ("colour: blue", "unknown key(s) colour"),
    ]:
        bad.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")):
            load_eval_config(str(bad))


def test_eval_config_defaults_and_relative_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MEL_DATA_ROOT", raising=False)
    (tmp_path / "e.yaml").write_text("data_root: data\nsamplings: []\nverify: {timeout_s: 300}\n")
    cfg = load_eval_config(str(tmp_path / "e.yaml"))
    assert cfg.data_root == str(tmp_path / "data") and cfg.samplings == PAPER_SAMPLINGS
    assert cfg.verify.timeout_s == 300.0 and cfg.verify.isolation == "auto"


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


def test_model_device_is_checked_and_not_in_the_hash():
    """Where the policy runs names no new run directory (each checkpoint's manifest records it instead)."""
    base = from_dict({})
    for device in ("cpu", "cuda"):
        assert config_hash(from_dict({"model": {"device": device}})) == config_hash(base)
    with pytest.raises(ConfigError, match="model.device: 'tpu' is not allowed; choose one of 'auto', 'cpu', 'cuda'"):
        load_config(None, ["model.device=tpu"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.field"):
        load_config(None, ["steps=3"])


def test_hash_ignores_fields_that_change_no_artifact():
    base = from_dict({})
    assert config_hash(base) == config_hash(from_dict({"run": {"steps": 9}, "verify": {"workers": 1}}))
    assert config_hash(base) != config_hash(from_dict({"optimizer": {"lr": 1e-5}}))
    assert default_run_dir(base) == f"runs/run-{config_hash(base)}"


@pytest.mark.parametrize("path,overrides,expected", [
    (None, [], "dae154c367"),
    ("tiny.yaml", [], "3d1dfd72ba"),
    ("demo.yaml", [], "c6ef226dbd"),
    ("demo.yaml", ["run.steps=9", "cluster.ray=local", "trackers.project=x", "eval.limit=3", "run.loggers=[wandb]",
                   "rollout.batch_size=8", "model.device=cpu", "run.checkpoint_every=2"], "c6ef226dbd"),
])
def test_the_hash_of_a_config_stays_what_it_was(path, overrides, expected):
    """Pinned: a changed hash moves every existing run to a new default directory (computed before the unhashed
    fields were marked on the fields, from the string set that listed them)."""
    assert config_hash(load_config(str(ROOT / path) if path else None, overrides)) == expected


def test_unhashed_fields_are_marked_on_the_fields_and_their_sections():
    never = unhashed_fields()
    assert {"run.steps", "run.checkpoint_every", "verify.workers", "model.device", "rollout.batch_size"} <= never
    assert {"cluster.ray", "trackers.project", "eval.benchmarks"} <= never  # whole sections
    assert not never & {"run.seed", "optimizer.lr", "rollout.dtype", "model.source"}


def test_rollout_dtype_is_vllms_alone_and_hashed_only_when_set():
    """vLLM may generate in bfloat16 while the trainer keeps float32; the transformers engine generates with the
    trainer's model, so another dtype there is refused. At its default (null) the field leaves every hash as it was."""
    base = from_dict({})
    bf16 = from_dict({"rollout": {"engine": "vllm", "dtype": "bfloat16"}})
    assert bf16.rollout.engine_dtype(bf16.model.dtype) == "bfloat16"
    assert base.rollout.engine_dtype("float32") == "float32"
    assert config_hash(from_dict({"rollout": {"dtype": None}})) == config_hash(base)
    assert config_hash(bf16) != config_hash(from_dict({"rollout": {"engine": "vllm"}}))
    assert from_dict({"rollout": {"dtype": "float32"}}).rollout.dtype == "float32"  # = model.dtype: allowed
    with pytest.raises(ConfigError, match=r"rollout.dtype: must be null or model.dtype \(float32\) with engine: "
                                          "transformers"):
        from_dict({"rollout": {"dtype": "bfloat16"}})
