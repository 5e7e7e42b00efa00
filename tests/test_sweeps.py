"""Sweep files (`mel.sweeps`): the grid expands to method x grid point x seed cells, each the config `mel run METHOD
--base BASE --set ...` would build; bad keys and values fail naming the key (and the cell) and what is allowed."""
from __future__ import annotations

import pytest

from conftest import REPO
from mel.config import ConfigError, config_hash, default_run_dir, load_config
from mel.sweeps import load_sweep, plan_sweep, report_is_current, sweep_cells

TINY = str(REPO / "configs" / "tiny.yaml")


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


def test_cells_are_methods_x_grid_x_seeds_in_order(tmp_path):
    sweep = load_sweep(_write(tmp_path, f"""
name: cmp
base: {TINY}
methods: [grpo, mel_code]
grid: {{optimizer.lr: [1e-2, 3e-2], algorithm.kl_coef: [0.0]}}
seeds: [0, 1]
set: [run.steps=1]
runs_root: {tmp_path}/runs
"""))
    cells = sweep_cells(sweep)
    assert len(cells) == 2 * 2 * 1 * 2
    assert [c.label for c in cells[:3]] == ["grpo algorithm.kl_coef=0.0 optimizer.lr=1e-2 seed=0",
                                            "grpo algorithm.kl_coef=0.0 optimizer.lr=1e-2 seed=1",
                                            "grpo algorithm.kl_coef=0.0 optimizer.lr=3e-2 seed=0"]
    assert cells[-1].label == "mel_code algorithm.kl_coef=0.0 optimizer.lr=3e-2 seed=1"
    planned = plan_sweep(sweep)
    last = planned[-1]
    same = load_config(str(REPO / "configs" / "methods" / "mel_code.yaml"),
                       ["run.steps=1", "algorithm.kl_coef=0.0", "optimizer.lr=0.03", "run.seed=1",
                        f"run.runs_root={tmp_path}/runs"], base=TINY)
    assert last.config == same and last.config_hash == config_hash(same)
    assert last.run_dir == default_run_dir(same) and last.run_dir.startswith(f"{tmp_path}/runs/mel_code-")
    assert same.mel.builder == "template" and same.model.source == "tiny-random" and same.run.seed == 1
    assert len({p.run_dir for p in planned}) == 8
    assert not report_is_current(sweep, planned) and sweep.report_dir == "reports/cmp"


def test_base_alone_and_paths_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "base.yaml").write_text("model: {source: tiny-random}\nrun: {name: mine}\n")
    sweep = load_sweep(_write(tmp_path, "name: seeds\nbase: cfg/base.yaml\nseeds: [3, 4, 5]\n"))
    assert sweep.base == str(tmp_path / "cfg" / "base.yaml")
    planned = plan_sweep(sweep)
    assert [p.config.run.seed for p in planned] == [3, 4, 5] and planned[0].config.run.name == "mine"
    assert [p.cell.label for p in planned] == ["seed=3", "seed=4", "seed=5"]


@pytest.mark.parametrize("text,message", [
    ("name: x\nbase: B\nmethod: [grpo]\n", "unknown key(s) method; known keys: base, eval, grid, methods, name"),
    ("name: x\nbase: B\ngrid: {optimiser.lr: [1]}\n", "grid: 'optimiser.lr': unknown section 'optimiser'; known "
                                                      "sections: algorithm, cluster, data"),
    ("name: x\nbase: B\ngrid: {optimizer.learning_rate: [1]}\n", "grid: 'optimizer.learning_rate': unknown key "
                                                                 "'learning_rate' of optimizer; known keys: betas"),
    ("name: x\nbase: B\ngrid: {optimizer.lr: 0.1}\n", "grid.optimizer.lr: must be a non-empty list of values"),
    ("name: x\nbase: B\nmethods: [grpo, mel_kode]\n",
     "methods: unknown method 'mel_kode'; choose one of grpo, grpo_code, mel,"),
    ("name: x\nbase: B\nseeds: [0, one]\n", "seeds[1]: must be an integer, got 'one'"),
    ("name: x\nbase: B\nseeds: [0, 0]\n", "seeds: must be distinct"),
    ("name: x\nbase: B\neval: {benchmarks: [humaneval, humaneval_pluss]}\n",
     "eval.benchmarks: unknown benchmark(s) humaneval_pluss; choose from"),
    ("name: x\nbase: B\neval: {limit: 0}\n", "eval.limit: must be null or at least 1"),
    ("name: x\nbase: B\nreport: {baseline: grpo, colour: red}\n", "report: unknown key(s) colour; known keys: "
                                                                  "ablation_base, baseline, n_resamples, out, seed"),
    ("name: Nightly Tiny\nbase: B\n", "name: must be lowercase letters, digits and dashes"),
    ("base: B\n", "name: missing"),
    ("name: x\n", "base: must be set when methods is empty"),
])
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(_write(tmp_path, text))
    assert message in str(err.value)


@pytest.mark.parametrize("text,message", [
    ("grid: {optimizer.lr: [0.01, fast]}", "cell 2 (grpo optimizer.lr=fast): optimizer.lr: must be a number"),
    ("grid: {rollout.group_size: [8, 1]}", "cell 2 (grpo rollout.group_size=1): rollout.group_size: must be at "
                                           "least 2"),
    ("set: [run.stepz=1]", "cell 1 (grpo): run: unknown key(s) stepz"),
    ("report: {baseline: rft}", "report.baseline: 'rft' is not the run name of any cell; choose one of grpo"),
    ("grid: {run.steps: [1, 1]}", "cells 1 (grpo run.steps=1) and 2 (grpo run.steps=1) resolve to the same config"),
])
def test_a_bad_cell_is_named_before_anything_runs(tmp_path, text, message):
    sweep = load_sweep(_write(tmp_path, f"name: x\nbase: {TINY}\nmethods: [grpo]\n{text}\n"))
    with pytest.raises(ConfigError) as err:
        plan_sweep(sweep)
    assert message in str(err.value)
