"""Every method config carries its paper's settings (a table: one row per file of ``configs/methods``), on the demo
base and on the tiny one alike (``--base`` replaces the model and data, never a paper setting), and the two papers'
shared RL settings are those of their own GRPO baseline. A method config without a row here fails."""
from __future__ import annotations

import dataclasses

import pytest

from mel.config import load_config

from conftest import REPO

METHODS = REPO / "configs" / "methods"
TINY = str(REPO / "configs" / "tiny.yaml")

# The papers' shared RL settings: MEL section 4.1 and eq. 10 (lr 1e-6, seq-mean-token-mean, no KL term named);
# MEL-Code section 4.1 (lr 1e-6, KL 0.001, clip 0.2; its loss aggregation unstated, VERL's token-mean).
MEL_RL = {"algorithm.loss_agg": "seq-mean-token-mean", "algorithm.kl_coef": 0.0, "optimizer.lr": 1e-6,
          "algorithm.clip_eps": 0.2}
CODE_RL = {"algorithm.loss_agg": "token-mean", "algorithm.kl_coef": 0.001, "optimizer.lr": 1e-6,
           "algorithm.clip_eps": 0.2}
MEL = {**MEL_RL, "mel.builder": "llm", "mel.replay": "in_context", "mel.nll_coef": 1.0, "mel.contrastive": True,
       "mel.nll_coef_mode": "fixed", "mel.max_experiences": 16, "revise.mode": "none"}
MEL_CODE = {**CODE_RL, "mel.builder": "template", "mel.replay": "reexecute", "mel.nll_coef": 0.004,
            "mel.nll_coef_mode": "fixed", "mel.max_experiences": 16, "mel.pairs_per_prompt": 1,
            "mel.contrastive": True, "mel.bifurcation": "diff", "revise.mode": "none"}
# R-MEL section 4.1: on MEL, math, B = 4, prefix constraint tau = 0.3, schedule (0.7, 0.5, 0.3), the longest seed.
RMEL = {**MEL, "data.taskset": "easy_math", "revise.mode": "rmel", "revise.budget": 4, "revise.lcp_tau": 0.3,
        "revise.taus": (0.7, 0.5, 0.3), "revise.seed_rule": "longest"}
RMEL_CODE = {**MEL_CODE, **{k: v for k, v in RMEL.items() if k.startswith("revise.")}}

PRESETS: dict[str, dict] = {
    "grpo": {**MEL_RL, "algorithm.name": "grpo", "mel.builder": "none"},
    "grpo_code": {**CODE_RL, "algorithm.name": "grpo", "mel.builder": "none"},
    "mel": {**MEL, "algorithm.name": "grpo", "mel.pairs_per_prompt": 2},
    "reinforcepp_me": {**MEL, "algorithm.name": "reinforce_pp"},
    "rft_me": {**MEL, "algorithm.name": "rft"},
    "mel_code": {**MEL_CODE, "algorithm.name": "grpo"},
    "mel_code_no_replay": {**MEL_CODE, "mel.replay": "none"},
    "mel_code_no_contrastive": {**MEL_CODE, "mel.contrastive": False, "mel.bifurcation": "first_plan_step"},
    "mel_code_bifurcation_skip": {**MEL_CODE, "mel.bifurcation": "first_plan_step"},
    "self_critique": {**CODE_RL, "mel.builder": "self_critique", "mel.contrastive": False, "mel.replay": "none",
                      "mel.nll_coef": 0.004, "mel.max_experiences": 16},
    "rmel": RMEL,
    "mel_extra": {**RMEL, "revise.mode": "extra"},
    "rmel_tau0": {**RMEL, "revise.lcp_tau": 0.0},
    "rmel_b1": {**RMEL, "revise.budget": 1},
    "rmel_code": RMEL_CODE,
    "mel_extra_code": {**RMEL_CODE, "revise.mode": "extra"},
    "rmel_code_tau0": {**RMEL_CODE, "revise.lcp_tau": 0.0},
    "rmel_code_b1": {**RMEL_CODE, "revise.budget": 1},
}


def _field(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_every_method_config_has_a_row():
    assert sorted(p.stem for p in METHODS.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_method_config_carries_its_papers_settings(name):
    for base in (None, TINY):
        cfg = load_config(str(METHODS / f"{name}.yaml"), base=base)
        got = {key: _field(cfg, key) for key in PRESETS[name]}
        assert got == PRESETS[name], (name, base)
        assert cfg.run.name == name


def test_the_demo_differs_from_the_papers_only_where_it_says_so():
    """configs/demo.yaml keeps its own lr (1e-5, chosen for a 135M model in 6 steps: README) and no
    KL term; the methods do not inherit them."""
    demo = load_config(str(REPO / "configs" / "demo.yaml"))
    assert demo.optimizer.lr == 1e-5 and demo.algorithm.loss_agg == "token-mean" and demo.algorithm.kl_coef == 0
    assert load_config(str(METHODS / "mel.yaml")).optimizer.lr == 1e-6


def test_code_variants_differ_from_the_math_ones_only_in_the_base_method():
    """rmel_code is rmel's revision on MEL-Code: the same revise section, MEL-Code's builder, replay and lambda."""
    for math_name, code_name in (("rmel", "rmel_code"), ("mel_extra", "mel_extra_code"),
                                 ("rmel_tau0", "rmel_code_tau0"), ("rmel_b1", "rmel_code_b1")):
        math_cfg = load_config(str(METHODS / f"{math_name}.yaml"))
        code_cfg = load_config(str(METHODS / f"{code_name}.yaml"))
        assert dataclasses.asdict(math_cfg.revise) == dataclasses.asdict(code_cfg.revise)
        assert (code_cfg.mel.builder, code_cfg.data.taskset) == ("template", "easy_code_train")
        assert (math_cfg.mel.builder, math_cfg.data.taskset) == ("llm", "easy_math")


def test_comparable_gradient_norms_is_the_calibration_default():
    """MEL-Code: lambda "calibrated so the gradient norm from NLL is comparable to the GRPO term": ratio 1."""
    from mel.config import MelConfig

    assert MelConfig().nll_grad_ratio == 1.0
    assert load_config(str(METHODS / "mel_code.yaml"), ["mel.nll_coef_mode=calibrated"]).mel.nll_grad_ratio == 1.0
