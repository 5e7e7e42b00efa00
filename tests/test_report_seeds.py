"""Seeds pooled per method in ``mel report`` (`mel.eval.seeds`, section 2b): synthetic run directories written through
``mel.artifacts`` as `test_eval_report` writes them, grpo, mel_code and mel with seeds, scored on 5 mbpp problems
with known per-problem values, so the mean over seeds, the paired difference pooled over seeds and the minimum
detectable effect are worked out by hand below; a seed only one method has is left out with a note; a method whose
rollouts were the baseline's at every step is named; one seed per method says so. Then the stats helpers by hand.
No model, no Prefect."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from mel import artifacts
from mel.config import config_hash, load_config, to_yaml
from mel.eval import seeds
from mel.eval.report import build_report
from mel.eval.runs import RunData
from mel.eval.stats import bootstrap_mean, minimum_detectable_effect, paired_bootstrap, standard_error
from mel.schemas import EVAL_PROBLEMS, EVAL_SUMMARY, ROLLOUTS
from test_eval_report import MBPP_P1, R, REPO, mbpp_id
from test_eval_stats import INDICES_SEED0

Z_SUM = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.80
STEP = 3  # every run's final evaluated step

# mbpp greedy pass@1 per problem (Mbpp/00..04) of each (method, seed) at the final step
VALUES = {
    "grpo": {0: [1, 0, 0, 1, 0], 1: [1, 1, 0, 0, 0], 2: [0, 1, 0, 1, 0]},
    "mel_code": {0: [1, 1, 0, 1, 0], 1: [1, 1, 1, 0, 0], 2: [1, 1, 0, 1, 1]},
    "mel": {0: [0, 0, 0, 1, 0], 1: [1, 1, 0, 0, 1], 3: [1, 1, 1, 1, 1]},  # seed 3 only mel has; no seed 2
}
# completion token ids of each step's rollouts (two samples a step); None: no rollouts.parquet in that step folder
SAME = [[[1, 2, 3], [4, 5]], [[6], [7, 8, 9]]]
ROLLOUT_STEPS = {
    ("grpo", 0): SAME, ("mel_code", 0): SAME,  # identical at both steps: the note
    ("grpo", 1): SAME, ("mel_code", 1): [SAME[0], [[6], [7, 8, 10]]],  # one token differs at step 1
    ("grpo", 2): SAME,  # mel_code seed 2 has no step folders
    ("mel", 0): SAME[:1],  # one step where grpo has two
    ("mel", 1): [SAME[0], None],  # the second step's file is missing
}


def write_seed_config(run_dir: Path, method: str, seed: int, *overrides: str) -> None:
    cfg = load_config(str(REPO / "configs" / "methods" / f"{method}.yaml"), [f"run.seed={seed}", *overrides])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    artifacts.write_manifest(str(run_dir / "config.yaml"), config_hash=config_hash(cfg))


def write_mbpp(run_dir: Path, vec: list[int]) -> None:
    """summary.parquet and the cell's problems.parquet of mbpp greedy pass@1 at ``STEP``, as `write_eval` does."""
    cell = f"cells/mbpp/s{STEP}-greedy-k"
    problems = [{"benchmark": "mbpp", "column": "main", "problem_id": mbpp_id(i), "metric": "pass@1",
                 "value": float(v), "n": 1, "c": v} for i, v in enumerate(vec)]
    artifacts.write_rows(str(run_dir / "eval" / cell / "problems.parquet"), problems, EVAL_PROBLEMS)
    summary = [{"cell": cell, "checkpoint": f"{run_dir}/step_{STEP - 1:04d}/checkpoint",
                "checkpoint_fingerprint": f"fp{STEP}", "step": STEP, "benchmark": "mbpp", "column": "main",
                "sampling": "greedy", "temperature": 0.0, "samples": 1, "metric": "pass@1",
                "value": sum(vec) / len(vec), "num_problems": len(vec)}]
    artifacts.write_rows(str(run_dir / "eval" / "summary.parquet"), summary, EVAL_SUMMARY)


def write_rollouts(run_dir: Path, steps: list[list[list[int]] | None]) -> None:
    for step, completions in enumerate(steps):
        folder = run_dir / f"step_{step:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        if completions is None:
            continue
        rows = [{"step": step, "prompt_index": 0, "sample_index": j, "problem_id": "p0", "problem_json": "{}",
                 "prompt_text": "q", "prompt_token_ids": [0], "completion_text": "a", "completion_token_ids": ids,
                 "completion_logprobs": [-0.5] * len(ids), "finish_reason": "stop", "num_completion_tokens": len(ids)}
                for j, ids in enumerate(completions)]
        artifacts.write_rows(str(folder / "rollouts.parquet"), rows, ROLLOUTS)


def make_seed_run(root: Path, method: str, seed: int, *overrides: str) -> str:
    run_dir = root / f"{method}-s{seed}"
    write_seed_config(run_dir, method, seed, *overrides)
    write_mbpp(run_dir, VALUES[method][seed])
    if (method, seed) in ROLLOUT_STEPS:
        write_rollouts(run_dir, ROLLOUT_STEPS[(method, seed)])
    return str(run_dir)


def seed_means(method: str, seed_list: list[int]) -> np.ndarray:
    """Per problem, the mean over ``seed_list`` of the method's values (as `mel.eval.seeds` computes it)."""
    return np.array([VALUES[method][s] for s in seed_list], dtype=np.float64).mean(axis=0)


def section_2b(markdown: str) -> str:
    return markdown.split("\n## 2b. ", 1)[1].split("\n## ", 1)[0]


def rows_of(text: str, first_cell: str, cells: int) -> list[list[str]]:
    """The Markdown table rows of ``text`` starting with ``first_cell`` that have ``cells`` cells."""
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith(f"| {first_cell} |")]
    return [r for r in rows if len(r) == cells]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    dirs = [make_seed_run(root, m, s) for m, by_seed in VALUES.items() for s in by_seed]
    return build_report(dirs, str(root / "report"), n_resamples=R, seed=3)


def test_groups_by_method_and_seed(pooled):
    assert [(g.method, g.seeds) for g in pooled.seed_groups] == [("grpo", (0, 1, 2)), ("mel_code", (0, 1, 2)),
                                                                 ("mel", (0, 1, 3))]
    assert pooled.baseline == "grpo (grpo-s0)"  # the first grpo run; its method is the pooled baseline
    # mel is mel_code's parent: the default ablation base, a method with three runs here: the first is the base
    assert pooled.ablation_base == "mel (mel-s0)"
    assert [a.name for a in pooled.ablations] == ["mel (mel-s0)"] + [f"mel_code (mel_code-s{s})" for s in (0, 1, 2)]
    assert "## 2b. Seeds pooled per method, vs baseline method `grpo`" in pooled.markdown
    assert "Seeds per method: `grpo` 0, 1, 2; `mel_code` 0, 1, 2; `mel` 0, 1, 3." in pooled.markdown


def test_the_baseline_named_by_its_method_is_its_lowest_seed(pooled, tmp_path):
    """``mel report ... --baseline grpo`` over a sweep's seeds: grpo's runs are its seeds, the lowest one is the
    baseline run (as the sweep takes it), and the pooled section compares with the method."""
    dirs = [r.run_dir for r in pooled.runs][::-1]  # the order given does not choose
    by_method = build_report(dirs, str(tmp_path / "report"), baseline="grpo", ablation_base="mel", n_resamples=R,
                             seed=3)
    assert by_method.baseline == pooled.baseline == "grpo (grpo-s0)"
    assert sorted(by_method.pooled_comparisons, key=lambda c: c.method) == sorted(pooled.pooled_comparisons,
                                                                                  key=lambda c: c.method)


def test_mean_over_seeds_by_hand(pooled):
    by = {m.method: m for m in pooled.pooled_means}
    # grpo: 2/5 on every seed -> 0.4; mel_code: 3/5, 3/5, 4/5 -> 2/3; mel: 1/5, 3/5, 5/5 -> 0.6
    assert by["grpo"].interval.mean == pytest.approx(0.4, abs=1e-12)
    assert by["mel_code"].interval.mean == pytest.approx(2 / 3, abs=1e-12)
    assert by["mel"].interval.mean == pytest.approx(0.6, abs=1e-12)
    assert (by["mel"].seeds, by["mel"].steps, by["mel"].interval.n, by["mel"].key) == ((0, 1, 3), (3, 3, 3), 5, MBPP_P1)
    # the interval resamples problems of the per-problem means over seeds: grpo's are [2/3, 2/3, 0, 2/3, 0]
    for method in VALUES:
        expected = bootstrap_mean(seed_means(method, list(VALUES[method])), n_resamples=R, seed=3)
        assert by[method].interval == expected
    low, high = by["mel_code"].interval.ci_low, by["mel_code"].interval.ci_high
    assert low < 2 / 3 < high
    text = section_2b(pooled.markdown)
    [row] = rows_of(text, "mel_code", 7)
    assert row[:6] == ["mel_code", "mbpp", "pass@1", "0, 1, 2", "5", "66.7"]
    assert row[6] == f"[{100 * low:.1f}, {100 * high:.1f}]"
    assert "Seeds are not resampled" in text


def test_pooled_difference_and_power_by_hand(pooled):
    by = {c.method: c for c in pooled.pooled_comparisons}
    assert set(by) == {"mel_code", "mel"}
    c = by["mel_code"]
    # per problem, mel_code - grpo averaged over seeds 0, 1, 2: [1, 1, 1/3, 2/3, 1/3] - [2/3, 2/3, 0, 2/3, 0]
    #   d = [1/3, 1/3, 1/3, 0, 1/3] -> diff = 4/15
    # sd(d, ddof=1): squared deviations 4 * (1/15)^2 + (4/15)^2 = 20/225, / 4 = 1/45; SE = sqrt(1/45) / sqrt(5) = 1/15
    # MDE = (1.95996 + 0.84162) / 15 = 0.18677 -> 18.7 points
    assert (c.baseline, c.seeds, c.result.n) == ("grpo", (0, 1, 2), 5)
    assert (c.method_value, c.baseline_value) == (pytest.approx(2 / 3), pytest.approx(0.4))
    assert c.result.diff == pytest.approx(4 / 15, abs=1e-12)
    assert c.se == pytest.approx(1 / 15, abs=1e-12)
    assert c.mde == pytest.approx(Z_SUM / 15, abs=1e-9) and round(100 * c.mde, 1) == 18.7
    assert c.result == paired_bootstrap(seed_means("mel_code", [0, 1, 2]), seed_means("grpo", [0, 1, 2]),
                                        n_resamples=R, seed=3)
    m = by["mel"]
    # seeds both have: 0, 1. mel [0.5, 0.5, 0, 0.5, 0.5] - grpo [1, 0.5, 0, 0.5, 0] = d = [-0.5, 0, 0, 0, 0.5]
    #   diff 0 (p = 1: every replicate is a tie); sd^2 = 0.5 / 4 = 0.125, SE = sqrt(0.125 / 5) = sqrt(0.025)
    assert (m.seeds, m.result.n, m.result.diff, m.result.p_value) == ((0, 1), 5, 0.0, 1.0)
    assert (m.method_value, m.baseline_value) == (pytest.approx(0.4), pytest.approx(0.4))
    assert m.se == pytest.approx(math.sqrt(0.025), abs=1e-12)
    assert m.mde == pytest.approx(Z_SUM * math.sqrt(0.025), abs=1e-9) and round(100 * m.mde, 1) == 44.3
    text = section_2b(pooled.markdown)
    [row] = rows_of(text, "mel_code", 11)
    assert row[:8] == ["mel_code", "mbpp", "pass@1", "0, 1, 2", "5", "66.7", "40.0", "+26.7"]
    assert row[10] == "18.7"
    assert rows_of(text, "mel", 11)[0][3:5] == ["0, 1", "5"]
    assert ("- mel_code vs grpo on mbpp pass@1: with 5 problems and 3 seeds, a difference smaller than 18.7 points "
            "would likely go undetected (80% power, alpha 0.05).") in text
    assert ("- mel vs grpo on mbpp pass@1: with 5 problems and 2 seeds, a difference smaller than 44.3 points would "
            "likely go undetected (80% power, alpha 0.05).") in text
    assert "SE = sd / √n of the n seed-averaged per-problem differences (closed form" in text
    with open(pooled.csvs["pooled_comparisons"]) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert (rows["mel_code"]["seeds"], float(rows["mel_code"]["mde"])) == ("0 1 2", pytest.approx(Z_SUM / 15))
    with open(pooled.csvs["seed_means"]) as f:
        assert {r["method"]: float(r["mean"]) for r in csv.DictReader(f)} == pytest.approx(
            {"grpo": 0.4, "mel_code": 2 / 3, "mel": 0.6})


def test_a_seed_only_one_side_has_is_left_out_with_a_note(pooled):
    note = ("mel vs grpo, pooled over seeds: seed(s) 3 only mel has and seed(s) 2 only grpo has; left out of the "
            "paired difference")
    assert note in pooled.warnings
    assert f"- {note}" in pooled.markdown  # the notes section
    assert not any(w.startswith("mel_code vs grpo, pooled") for w in pooled.warnings)


def test_rollouts_identical_to_the_baseline(pooled):
    # mel_code seed 0 only: seed 1 differs in one token at step 1, seed 2 has no step folders, mel seed 0 has one
    # step of grpo's two, mel seed 1 lacks step 1's file
    assert pooled.same_rollouts == ("mel_code seed 0: its rollouts were identical to grpo's in all 2 steps, so the "
                                    "comparison measures only its extra loss term",)
    assert "### Rollouts shared with the baseline" in pooled.markdown
    assert f"- {pooled.same_rollouts[0]}" in section_2b(pooled.markdown)
    assert not any("rollouts" in w for w in pooled.warnings)  # missing files: no note


def test_one_seed_per_method(tmp_path):
    dirs = [make_seed_run(tmp_path, m, 0) for m in ("grpo", "mel_code")]
    report = build_report(dirs, str(tmp_path / "report"), n_resamples=R, seed=3)
    text = section_2b(report.markdown)
    assert "Each method has one seed (seeds = 1): nothing is pooled" in text
    assert "Mean over seeds" not in text and not rows_of(text, "mel_code", 7)
    [c] = report.pooled_comparisons
    [single] = report.comparisons
    assert c.result == single.result  # the pooled difference over one seed is section 2's
    # d = [1,1,0,1,0] - [1,0,0,1,0] = [0, 1, 0, 0, 0]: diff 0.2, sd^2 = (4 * 0.04 + 0.64) / 4 = 0.2, SE = 0.2
    assert c.se == pytest.approx(0.2, abs=1e-12) and round(100 * c.mde, 1) == 56.0
    assert ("mel_code vs grpo on mbpp pass@1: with 5 problems and 1 seed, a difference smaller than 56.0 points "
            "would likely go undetected (80% power, alpha 0.05).") in text
    assert report.same_rollouts == (report.same_rollouts[0],) and "seed 0" in report.same_rollouts[0]


def test_single_run_has_no_seed_section(tmp_path):
    report = build_report([make_seed_run(tmp_path, "grpo", 0)], str(tmp_path / "report"), n_resamples=R)
    assert "## 2b." not in report.markdown and report.pooled_comparisons == () and report.seed_groups == ()


def test_grouping_leaves_out_unknown_duplicate_and_differing_runs():
    def run(name: str, method: str, config: dict | None) -> RunData:
        return RunData(name, method, f"/r/{name}", config, (), {}, ())

    groups, notes = seeds.group_by_method([
        run("a", "grpo", {"run.seed": 1, "optimizer.lr": 1e-5}),
        run("b", "grpo", {"run.seed": 0, "optimizer.lr": 1e-5, "run.steps": 9}),  # run.steps is not hashed
        run("c", "grpo", {"run.seed": 0, "optimizer.lr": 1e-5}),
        run("d", "mel", None),
        run("e", "rmel", {"run.seed": 0, "optimizer.lr": 1e-5}),
        run("f", "rmel", {"run.seed": 1, "optimizer.lr": 3e-5}),
    ])
    assert [(g.method, g.seeds, [r.name for r in g.runs.values()]) for g in groups] == [
        ("grpo", (0, 1), ["b", "a"])]
    assert notes == ["c: a second run of grpo seed 0 (after b); left out of the seeds pooled per method",
                     "d: no run.seed in its config; left out of the seeds pooled per method",
                     "rmel: its runs differ in more than run.seed (optimizer.lr); its seeds are not pooled"]


def test_bootstrap_mean_by_hand():
    x = [1.0, 0.0, 0.5, 0.0]
    # rows of INDICES_SEED0 -> means: [0,.5,.5,0] .25; [0,1,1,1] .75; [1,0,.5,0] .375; [.5,.5,0,.5] .375; [.5,.5,.5,0]
    #   .375; sorted [.25, .375, .375, .375, .75]; q = .025 at position .1 -> .2625; q = .975 at 3.9 -> .7125
    assert np.asarray(x)[np.array(INDICES_SEED0)].mean(axis=1).tolist() == [0.25, 0.75, 0.375, 0.375, 0.375]
    got = bootstrap_mean(x, n_resamples=5, seed=0)
    assert (got.mean, got.n, got.n_resamples) == (0.375, 4, 5)
    assert (got.ci_low, got.ci_high) == (pytest.approx(0.2625), pytest.approx(0.7125))
    assert bootstrap_mean([0.5] * 6, n_resamples=50).ci_low == bootstrap_mean([0.5] * 6, n_resamples=50).ci_high == 0.5
    with pytest.raises(ValueError, match="no problems"):
        bootstrap_mean([])


def test_standard_error_and_mde_by_hand():
    assert standard_error([1 / 3, 1 / 3, 1 / 3, 0.0, 1 / 3]) == pytest.approx(1 / 15, abs=1e-12)
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)  # sd = sqrt(0.5), / sqrt(2)
    assert standard_error([0.7]) is None
    assert minimum_detectable_effect(1.0) == pytest.approx(2.8015852, abs=1e-7)
    assert minimum_detectable_effect(1.0, alpha=0.01, power=0.9) == pytest.approx(2.5758293 + 1.2815516, abs=1e-6)
    assert minimum_detectable_effect(0.0) == 0.0
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(1.0, power=1.0)


def test_rollouts_identical_and_no_meta_experience_kept_is_said(tmp_path):
    """MEL whose every M was rejected by replay trains as GRPO does: with the same rollouts, the note says there is
    nothing to measure, not that the comparison measures its extra loss term (its metrics: M = 0 at every step)."""
    from mel.stages.table import METRICS

    dirs = [make_seed_run(tmp_path, m, 0) for m in ("grpo", "mel")]
    for d in dirs:
        write_rollouts(Path(d), [[[1, 2], [3]], [[4]]])
    rows = [{**dict.fromkeys(METRICS.names), "step": step, "num_experiences": 0} for step in (0, 1)]
    artifacts.write_rows(str(Path(dirs[1]) / "metrics.parquet"), rows, METRICS, steps=2)
    report = build_report(dirs, str(tmp_path / "report"), n_resamples=R, seed=3)
    assert report.same_rollouts == ("mel seed 0: its rollouts were identical to grpo's in all 2 steps, and no "
                                    "meta-experience entered its loss in any step: it trained as grpo did, so the "
                                    "comparison has no difference to measure",)


def test_rollouts_and_updates_identical_are_said_to_leave_nothing_to_measure(tmp_path):
    """R-MEL against MEL+Extra where neither rescued a group: the same rollouts and, step by step, the same loss and
    gradient norm (with meta-experiences kept): nothing to measure. One differing gradient norm: its loss term."""
    from mel.stages.table import METRICS

    dirs = [make_seed_run(tmp_path, m, 0) for m in ("grpo", "mel")]
    for d in dirs:
        write_rollouts(Path(d), [[[1, 2], [3]], [[4]]])

    def metrics(run_dir: str, norms: tuple[float, float]) -> None:
        rows = [{**dict.fromkeys(METRICS.names), "step": step, "num_experiences": 1, "loss": 0.5, "grad_norm": norm}
                for step, norm in enumerate(norms)]
        artifacts.write_rows(str(Path(run_dir) / "metrics.parquet"), rows, METRICS, steps=2)

    metrics(dirs[0], (1.0, 2.0))
    metrics(dirs[1], (1.0, 2.0))
    report = build_report(dirs, str(tmp_path / "report"), n_resamples=R, seed=3)
    assert report.same_rollouts == ("mel seed 0: its rollouts were identical to grpo's in all 2 steps, and so were its "
                                    "updates (the same loss and gradient norm at every step): it trained as grpo did, "
                                    "so the comparison has no difference to measure",)
    metrics(dirs[1], (1.0, 2.5))
    report = build_report(dirs, str(tmp_path / "report2"), n_resamples=R, seed=3)
    assert report.same_rollouts == ("mel seed 0: its rollouts were identical to grpo's in all 2 steps, so the "
                                    "comparison measures only its extra loss term",)
