"""The demo's held-out split and the before/after evaluation that ends a run whose config has an ``eval`` section."""
from __future__ import annotations

import json

import pytest

from conftest import REPO, published_artifacts
from cli.main import main
from mel import artifacts
from mel.config import config_hash, load_config, to_yaml
from mel.data import load_taskset
from mel.data.easy_code import HELDOUT_SIZE, easy_code_problems, easy_code_split
from mel.eval.before_after import before_after

TINY = str(REPO / "configs" / "tiny.yaml")


def test_the_split_is_a_fixed_partition_of_easy_code():
    train, heldout = easy_code_split("train"), easy_code_split("heldout")
    ids = [p.problem_id for p in easy_code_problems()]
    assert len(heldout) == HELDOUT_SIZE and len(train) == len(ids) - HELDOUT_SIZE
    assert not {p.problem_id for p in train} & {p.problem_id for p in heldout}
    assert sorted(p.problem_id for p in train + heldout) == sorted(ids)
    assert [p.problem_id for p in heldout] == [i for i in ids if i in {p.problem_id for p in heldout}], "list order"
    assert [p.problem_id for p in load_taskset("easy_code_heldout")] == [p.problem_id for p in heldout]
    assert [p.problem_id for p in load_taskset("easy_code_train")] == [p.problem_id for p in train]
    assert heldout[0].problem_id == "easy/add" and heldout[-1].problem_id == "easy/get_value", "seeded, not moved"
    with pytest.raises(ValueError, match="part must be"):
        easy_code_split("test")


def test_the_eval_section_is_not_hashed_and_its_eval_config_is_relative_to_the_file(tmp_path):
    (tmp_path / "ev.yaml").write_text("samplings: [{temperature: 0}]\n")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"base: {TINY}\neval:\n  benchmarks: [toy_regex]\n  config: ev.yaml\n")
    cfg = load_config(str(cfg_file))
    assert cfg.eval.config == str(tmp_path / "ev.yaml")
    assert config_hash(cfg) == config_hash(load_config(TINY))


def test_a_runs_saved_config_names_the_eval_config_it_ran_with(tmp_path, monkeypatch):
    """A config read by a relative path (``mel run configs/x.yaml`` from the repository) names its eval config by a
    path that the run directory's copy (``config.yaml``, read again by reports and resumes) resolves to the same
    file."""
    (tmp_path / "configs" / "eval").mkdir(parents=True)
    (tmp_path / "configs" / "eval" / "ev.yaml").write_text("samplings: [{temperature: 0}]\n")
    (tmp_path / "configs" / "x.yaml").write_text(
        f"base: {TINY}\neval:\n  benchmarks: [toy_regex]\n  config: eval/ev.yaml\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/x.yaml")
    assert cfg.eval.config == str(tmp_path / "configs" / "eval" / "ev.yaml")
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "config.yaml").write_text(to_yaml(cfg))
    assert load_config("runs/r/config.yaml").eval.config == cfg.eval.config
    assert load_config(TINY, ["eval.config=configs/eval/ev.yaml"]).eval.config == cfg.eval.config


def test_an_unknown_eval_benchmark_fails_before_training(capsys, tmp_path):
    code = main(["run", TINY, "--set", "eval.benchmarks=[no_such_bench]", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "eval.benchmarks: unknown no_such_bench" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.e2e
def test_a_run_ends_with_base_vs_final_on_its_eval_benchmarks_and_a_rerun_recomputes_nothing(
        tmp_path, capsys, monkeypatch, prefect_harness):
    (tmp_path / "ev.yaml").write_text("samplings: [{temperature: 0}, {temperature: 1.0, samples: 2, ks: [2]}]\n"
                                      "generation: {max_new_tokens: 4}\n")
    run_dir = str(tmp_path / "run")
    argv = ["run", TINY, "--set", "run.steps=2", "--set", "optimizer.lr=0.05", "--set", "eval.benchmarks=[toy_regex]",
            "--set", f"eval.config={tmp_path / 'ev.yaml'}", "--run-dir", run_dir]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "before and after training (base model vs step 2" in out
    rows = before_after(run_dir)
    assert {(r.key.benchmark, r.key.metric) for r in rows} == {("toy_regex", "pass@1"), ("toy_regex", "avg@2"),
                                                                ("toy_regex", "pass@2")}
    summary = artifacts.read_table(artifacts.join(run_dir, "eval", "summary.parquet")).to_pylist()
    assert sorted({r["step"] for r in summary}) == [0, 2], "only the ends are evaluated"
    for r in rows:
        at = {s["step"]: s["value"] for s in summary if (s["benchmark"], s["sampling"], s["metric"]) ==
              (r.key.benchmark, r.key.sampling, r.key.metric)}
        assert (r.before, r.after) == pytest.approx((at[0], at[2]))
        assert r.result.diff == pytest.approx(r.after - r.before)
        assert r.result.ci_low <= r.result.diff <= r.result.ci_high and r.result.n == 16
        assert f"{100 * r.before:.1f}%" in out and f"{100 * r.after:.1f}%" in out

    published = published_artifacts({"key": {"like_": "%-before-after"}, "type": {"any_": ["table"]}})  # run page
    assert published, "no before/after artifact on the run's page"
    table = json.loads(published[0])
    assert [(t["benchmark"], t["score"], t["base"], t["final"], t["problems"]) for t in table] == [
        (r.key.where, r.key.what, round(r.before, 4), round(r.after, 4), r.result.n) for r in rows]

    import flows.train

    monkeypatch.setattr(flows.train, "train", lambda *a, **k: pytest.fail("a complete run must not start the flow"))
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "all" in again and "before and after training" in again

