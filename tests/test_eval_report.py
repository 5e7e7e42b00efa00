"""The comparison report on three synthetic run directories (grpo, mel_code, mel_code_no_replay), written through
``mel.artifacts`` with manifests as the trainer and the eval flow write them: the main table equals the synthetic
final scores (best in bold), each comparison's difference is the hand-computed mean difference and its interval and
p-value are `paired_bootstrap` on the same vectors, the ablation names the changed config field, the validation
figure marks each run's peak; missing metrics or evaluations, a single run and disjoint benchmarks do not crash.
No model, no Prefect."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mel import artifacts
from mel.config import config_hash, load_config, to_yaml
from mel.eval import plots, tables
from mel.eval.compare import config_changes, default_ablation_base
from mel.eval.report import ScoreKey, build_report
from mel.eval.tables import MISSING
from mel.eval.runs import RunData, Score, flatten_config
from mel.eval.sections import main_section
from mel.eval.stats import paired_bootstrap
from mel.schemas import EVAL_PROBLEMS, EVAL_SUMMARY
from mel.stages.table import METRICS

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
R = 400  # bootstrap resamples in these tests (the default 10000 is slower and not what is tested)

HE = 8  # humaneval_plus problems (columns base and plus)
MBPP = 10  # mbpp problems (column main; greedy pass@1 and sampled avg@4)
HE_BASE = ScoreKey("humaneval_plus", "base", "greedy", "pass@1")
HE_PLUS = ScoreKey("humaneval_plus", "plus", "greedy", "pass@1")
MBPP_P1 = ScoreKey("mbpp", "main", "greedy", "pass@1")
MBPP_AVG = ScoreKey("mbpp", "main", "t0.6-n4", "avg@4")

# Problems solved (greedy) at eval steps 0..3 (updates done; 0 = the base model, the same for every run). A run
# solves the first k problems of its own rotation: problem (offset + i) % n for i < k (offset 0 at step 0).
SOLVED = {
    "grpo": {"he_base": [3, 4, 4, 4], "he_plus": [2, 3, 3, 3], "mbpp": [4, 5, 5, 6]},
    "mel_code": {"he_base": [3, 5, 7, 6], "he_plus": [2, 4, 5, 5], "mbpp": [4, 6, 7, 7]},
    "mel_code_no_replay": {"he_base": [3, 4, 5, 5], "he_plus": [2, 3, 4, 4], "mbpp": [4, 5, 6, 6]},
}
OFFSET = {"grpo": 0, "mel_code": 2, "mel_code_no_replay": 1}


def solved_vector(run: str, part: str, step: int, n: int) -> list[float]:
    k = SOLVED[run][part][step]
    offset = OFFSET[run] if step > 0 else 0
    chosen = {(offset + i) % n for i in range(k)}
    return [1.0 if i in chosen else 0.0 for i in range(n)]


def he_id(i: int) -> str:
    return f"HumanEval/{i}"


def mbpp_id(i: int) -> str:
    return f"Mbpp/{i:02d}"


def write_config(run_dir: Path, method: str) -> None:
    cfg = load_config(str(REPO / "configs" / "methods" / f"{method}.yaml"))
    uri = str(run_dir / "config.yaml")
    run_dir.mkdir(parents=True, exist_ok=True)
    Path(uri).write_text(to_yaml(cfg))
    artifacts.write_manifest(uri, config_hash=config_hash(cfg))


def write_metrics(run_dir: Path, method: str, steps: int = 3) -> None:
    mel = method != "grpo"
    rows = []
    for s in range(steps):
        row = dict.fromkeys(METRICS.names)
        row.update(step=s, reward_mean=0.3 + 0.1 * s + (0.05 if mel else 0.0), reward_std=0.4, num_samples=32,
                   p_pair=0.5 + 0.05 * s)
        if mel:
            row.update(p_accept=0.6 + 0.1 * s if method == "mel_code" else 1.0, retention=0.8 - 0.1 * s,
                       num_pairs=4, num_built=4, num_accepted=3)
        rows.append(row)
    artifacts.write_rows(str(run_dir / "metrics.parquet"), rows, METRICS, steps=steps)


def write_eval(run_dir: Path, method: str, steps: tuple[int, ...] = (0, 1, 2, 3),
               benchmarks: tuple[str, ...] = ("humaneval_plus", "mbpp")) -> None:
    """summary.parquet and the cells' problems.parquet, each problem's value consistent with the summary's mean."""
    eval_dir = run_dir / "eval"
    summary = []

    def cell_rows(cell: str, step: int, sampling: str, temperature: float, samples: int, bench: str,
                  values: dict[tuple[str, str], list[float]], ids) -> None:
        problems = []
        for (column, metric), vec in values.items():
            problems += [{"benchmark": bench, "column": column, "problem_id": ids(i), "metric": metric, "value": v,
                          "n": samples, "c": round(v * samples)} for i, v in enumerate(vec)]
            summary.append({"cell": cell, "checkpoint": f"{run_dir}/step_{step - 1:04d}/checkpoint",
                            "checkpoint_fingerprint": f"fp{step}", "step": step, "benchmark": bench,
                            "column": column, "sampling": sampling, "temperature": temperature, "samples": samples,
                            "metric": metric, "value": sum(vec) / len(vec), "num_problems": len(vec)})
        artifacts.write_rows(str(eval_dir / cell / "problems.parquet"), problems, EVAL_PROBLEMS)

    for s in steps:
        if "humaneval_plus" in benchmarks:
            cell_rows(f"cells/humaneval_plus/s{s}-greedy-k", s, "greedy", 0.0, 1, "humaneval_plus",
                      {("base", "pass@1"): solved_vector(method, "he_base", s, HE),
                       ("plus", "pass@1"): solved_vector(method, "he_plus", s, HE)}, he_id)
        if "mbpp" in benchmarks:
            greedy = solved_vector(method, "mbpp", s, MBPP)
            cell_rows(f"cells/mbpp/s{s}-greedy-k", s, "greedy", 0.0, 1, "mbpp", {("main", "pass@1"): greedy},
                      mbpp_id)
            # avg@4: 3 of 4 samples pass on the problems greedy solves, 1 of 4 on the others
            cell_rows(f"cells/mbpp/s{s}-t0.6-n4-k", s, "t0.6-n4", 0.6, 4, "mbpp",
                      {("main", "avg@4"): [0.75 if g else 0.25 for g in greedy]}, mbpp_id)
    artifacts.write_rows(str(eval_dir / "summary.parquet"), summary, EVAL_SUMMARY)


def make_run(root: Path, method: str, *, metrics: bool = True, evaluation: bool = True, **eval_kw) -> str:
    run_dir = root / f"{method}-0123456789"
    write_config(run_dir, method)
    if metrics:
        write_metrics(run_dir, method)
    if evaluation:
        write_eval(run_dir, method, **eval_kw)
    return str(run_dir)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = [make_run(root, m) for m in ("grpo", "mel_code", "mel_code_no_replay")]
    out = root / "report"
    return dirs, out, build_report(dirs, str(out), n_resamples=R, seed=3)


def section(markdown: str, number: int) -> str:
    """The text of the report's section ``## <number>. ...`` (up to the next ``## ``)."""
    return markdown.split(f"\n## {number}. ", 1)[1].split("\n## ", 1)[0]


def md_row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the first Markdown table row starting with ``first_cell``."""
    for line in markdown.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split(" | ")]
    raise AssertionError(f"no row {first_cell!r}")


def test_files_exist(three):
    _, out, report = three
    names = {"report.md", "report.html", "validation.png", "training_reward.png", "mel_rates.png",
             "main_table.csv", "comparisons.csv", "ablation.csv"}
    assert names <= {p.name for p in out.iterdir()}
    for path in report.figures.values():
        assert Path(path).read_bytes()[:8] == PNG_MAGIC
    assert set(report.figures) == {"validation", "training_reward", "mel_rates"}
    assert Path(report.markdown_path).read_text() == report.markdown
    assert report.warnings == ()
    html = Path(report.html_path).read_text()
    for png in ("validation.png", "training_reward.png", "mel_rates.png"):
        assert f'<img src="{png}"' in html and f"]({png})" in report.markdown


def test_main_table_is_the_synthetic_finals(three):
    _, _, report = three
    assert [r.name for r in report.runs] == ["grpo", "mel_code", "mel_code_no_replay"]
    assert report.keys == (HE_BASE, HE_PLUS, MBPP_P1, MBPP_AVG)  # base before plus, greedy before sampled
    # final step 3: he base 4/8, 6/8, 5/8; he plus 3/8, 5/8, 4/8; mbpp 6/10, 7/10, 6/10;
    # avg@4 = (0.75 * solved + 0.25 * (10 - solved)) / 10: 0.55, 0.6, 0.55
    expected = {"grpo": ["50.0", "37.5", "60.0", "55.0"], "mel_code": ["75.0", "62.5", "70.0", "60.0"],
                "mel_code_no_replay": ["62.5", "50.0", "60.0", "55.0"]}
    for run in report.runs:
        assert run.final_step == 3
        assert [run.finals()[k].value for k in report.keys] == [float(v) / 100 for v in expected[run.name]]
        cells = md_row(section(report.markdown, 1), run.name)
        assert cells[1] == "3"
        assert [c.strip("*") for c in cells[2:]] == expected[run.name]
    # mel_code is best everywhere; grpo and mel_code_no_replay tie on nothing it wins
    assert md_row(section(report.markdown, 1), "mel_code")[2:] == ["**75.0**", "**62.5**", "**70.0**", "**60.0**"]
    assert not any(c.startswith("**") for c in md_row(section(report.markdown, 1), "grpo")[2:])
    assert "humaneval_plus (base) pass@1 (n=8)" in report.markdown
    assert "mbpp avg@4 (t0.6-n4) (n=10)" in report.markdown
    html = Path(report.html_path).read_text()
    assert "<b>75.0</b>" in html and "<b>50.0</b>" not in html
    with open(report.csvs["main_table"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4
    row = next(r for r in rows if r["method"] == "mel_code" and r["column"] == "base")
    assert (float(row["value"]), row["num_problems"], row["step"]) == (0.75, "8", "3")


def test_best_value_ties_are_all_bold():
    runs = [RunData(n, n, f"/r/{n}", None, (), {3: {MBPP_P1: Score(v, 10, 3, "c")}}, ())
            for n, v in (("a", 0.6), ("b", 0.6), ("c", 0.5))]
    table = main_section(runs, [MBPP_P1])[-1]
    assert [row[2].bold for row in table.rows] == [True, True, False]


def test_comparisons_by_hand(three):
    _, _, report = three
    assert report.baseline == "grpo"
    by = {(c.method, c.key): c for c in report.comparisons}
    assert len(by) == 2 * 4
    # mel_code vs grpo, he base at step 3: grpo solves {0,1,2,3}, mel_code (offset 2) {2,...,7}
    #   d = [-1, -1, 0, 0, 1, 1, 1, 1] -> diff = 2 / 8 = 0.25
    # mbpp pass@1: grpo {0..5}, mel_code {2..8}: d = [-1,-1,0,0,0,0,1,1,1,0] -> 1/10
    # avg@4 is 0.25 + 0.5 * solved, so its d is half the pass@1 one: 0.05
    # no_replay (offset 1) he base {1..5}: d = [-1,0,0,0,1,1,0,0] -> 1/8; he plus {1,2,3,4} vs {0,1,2}: 1/8
    expected = {("mel_code", HE_BASE): 0.25, ("mel_code", HE_PLUS): 0.25, ("mel_code", MBPP_P1): 0.1,
                ("mel_code", MBPP_AVG): 0.05, ("mel_code_no_replay", HE_BASE): 0.125,
                ("mel_code_no_replay", HE_PLUS): 0.125, ("mel_code_no_replay", MBPP_P1): 0.0,
                ("mel_code_no_replay", MBPP_AVG): 0.0}
    for (method, key), diff in expected.items():
        c = by[(method, key)]
        assert c.result.diff == pytest.approx(diff, abs=1e-12)
        assert (c.method_step, c.baseline_step, c.baseline) == (3, 3, "grpo")
        part, n = {HE_BASE: ("he_base", HE), HE_PLUS: ("he_plus", HE)}.get(key, ("mbpp", MBPP))
        a, b = solved_vector(method, part, 3, n), solved_vector("grpo", part, 3, n)
        if key == MBPP_AVG:
            a, b = [0.25 + 0.5 * x for x in a], [0.25 + 0.5 * x for x in b]
        # problem ids sort in index order (HumanEval/0..7 and Mbpp/00..09), so the vectors pair as built
        assert c.result == paired_bootstrap(a, b, n_resamples=R, seed=3)
        assert c.method_value == pytest.approx(sum(a) / n) and c.baseline_value == pytest.approx(sum(b) / n)
    assert by[("mel_code_no_replay", MBPP_P1)].result.p_value == 1.0  # same problems solved, rotated: d sums to 0
    cells = md_row(section(report.markdown, 2), "mel_code")
    assert cells[:5] == ["mel_code", "humaneval_plus (base)", "pass@1", "3 / 3", "8"]
    assert cells[5:8] == ["75.0", "50.0", "+25.0"]
    with open(report.csvs["comparisons"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    first = rows[0]
    c = by[("mel_code", HE_BASE)]
    assert (first["method"], first["column"], float(first["diff"]), float(first["p_value"])) == (
        "mel_code", "base", 0.25, c.result.p_value)


def test_comparison_pairs_by_problem_id(tmp_path):
    """A baseline evaluated on fewer problems: only the common ones are paired, with a note."""
    dirs = [make_run(tmp_path, m, benchmarks=("mbpp",)) for m in ("grpo", "mel_code")]
    grpo_cell = Path(dirs[0]) / "eval" / "cells/mbpp/s3-greedy-k" / "problems.parquet"
    rows = artifacts.read_table(str(grpo_cell), EVAL_PROBLEMS).to_pylist()
    artifacts.write_rows(str(grpo_cell), [r for r in rows if r["problem_id"] != "Mbpp/09"], EVAL_PROBLEMS)
    report = build_report(dirs, str(tmp_path / "out"), n_resamples=R)
    c = next(c for c in report.comparisons if c.key == MBPP_P1)
    # grpo {0..5} vs mel_code {2..8} on problems 0..8: d = [-1,-1,0,0,0,0,1,1,1] -> 1/9
    assert c.result.n == 9 and c.result.diff == pytest.approx(1 / 9)
    assert any("9 paired problems (10 and 9 evaluated)" in w for w in report.warnings)


def test_ablation_table(three):
    _, _, report = three
    assert report.ablation_base == "mel_code"
    assert [a.name for a in report.ablations] == ["mel_code", "mel_code_no_replay"]
    row = report.ablations[1]
    assert "mel.replay: reexecute → none" in row.changed
    assert not any(c.startswith("run.name") for c in row.changed)
    assert row.deltas[HE_BASE] == pytest.approx(5 / 8 - 6 / 8)
    assert row.deltas[MBPP_P1] == pytest.approx(0.6 - 0.7)
    text = section(report.markdown, 3)
    cells = md_row(text, "mel_code_no_replay")
    assert cells[2] == "62.5 (-12.5)"
    assert "mel.replay: reexecute → none" in cells[-1]
    assert md_row(text, "mel_code")[-1] == "(ablation base)"


def test_validation_peaks(three):
    _, _, report = three
    # he base solved per step: grpo [3,4,4,4] -> first max at step 1; mel_code [3,5,7,6] -> 7/8 at step 2
    assert report.peaks[HE_BASE] == {"grpo": (1, 0.5), "mel_code": (2, 0.875), "mel_code_no_replay": (2, 0.625)}
    assert set(report.peaks) == {HE_BASE, HE_PLUS, MBPP_P1}  # one panel per (benchmark, column), pass@1 shown
    assert "| mel_code | 87.5 @ 2 |" in report.markdown


def test_missing_evaluation_and_metrics(tmp_path):
    dirs = [make_run(tmp_path, "grpo", evaluation=False), make_run(tmp_path, "mel_code", metrics=False),
            make_run(tmp_path, "mel_code_no_replay")]
    report = build_report(dirs, str(tmp_path / "out"), n_resamples=R)
    assert any("grpo: no evaluation" in w for w in report.warnings)
    assert any("mel_code: metrics.parquet does not exist yet" in w for w in report.warnings)
    assert md_row(section(report.markdown, 1), "grpo")[1:] == ["–"] * 5
    assert report.baseline == "grpo" and report.comparisons == ()
    assert "nothing to compare" in report.markdown
    assert set(report.peaks[HE_BASE]) == {"mel_code", "mel_code_no_replay"}
    assert set(report.figures) == {"validation", "training_reward", "mel_rates"}
    assert "- grpo: no evaluation" in report.markdown  # the notes section


def test_single_run(tmp_path):
    report = build_report([make_run(tmp_path, "grpo")], str(tmp_path / "out"), n_resamples=R)
    assert report.comparisons == () and report.ablations == () and report.ablation_base is None
    assert "Only one run: nothing to compare." in report.markdown
    assert "No ablation base" in report.markdown
    assert set(report.figures) == {"validation", "training_reward", "mel_rates"}  # grpo has p_pair


def test_runs_without_anything_to_draw(tmp_path):
    report = build_report([make_run(tmp_path, "grpo", metrics=False, evaluation=False)], str(tmp_path / "out"))
    assert report.figures == {} and report.keys == ()
    assert "No run has an evaluation yet" in report.markdown
    assert "no reward figure" in report.markdown and "no rates figure" in report.markdown


def test_disjoint_benchmarks(tmp_path):
    dirs = [make_run(tmp_path, "grpo", benchmarks=("mbpp",)),
            make_run(tmp_path, "mel_code", benchmarks=("humaneval_plus",))]
    report = build_report(dirs, str(tmp_path / "out"), n_resamples=R)
    assert md_row(section(report.markdown, 1), "grpo")[2:] == ["–", "–", "60.0", "55.0"]
    assert md_row(section(report.markdown, 1), "mel_code")[2:] == ["75.0", "62.5", "–", "–"]
    assert report.comparisons == ()


def test_baseline_choice_and_errors(three, tmp_path):
    dirs, _, _ = three
    report = build_report(dirs, str(tmp_path / "out"), baseline="mel_code", ablation_base="grpo", n_resamples=R)
    assert report.baseline == "mel_code"
    assert {c.method for c in report.comparisons} == {"grpo", "mel_code_no_replay"}
    assert [a.name for a in report.ablations] == ["grpo"]
    assert "No run is named `grpo_…`" in report.markdown
    with pytest.raises(ValueError, match="not among the runs; known: grpo, mel_code, mel_code_no_replay"):
        build_report(dirs, str(tmp_path / "out2"), baseline="mel")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report([str(tmp_path / "nowhere")], str(tmp_path / "out3"))


def test_runs_sharing_a_name(tmp_path):
    a = make_run(tmp_path / "a", "grpo")
    b = make_run(tmp_path / "b", "grpo", benchmarks=("mbpp",))
    Path(b).rename(tmp_path / "b" / "grpo-seed1")
    report = build_report([a, str(tmp_path / "b" / "grpo-seed1")], str(tmp_path / "out"), n_resamples=R)
    assert [r.name for r in report.runs] == ["grpo (grpo-0123456789)", "grpo (grpo-seed1)"]
    assert report.baseline == "grpo (grpo-0123456789)"
    assert {c.method for c in report.comparisons} == {"grpo (grpo-seed1)"}
    with pytest.raises(ValueError, match="names 2 runs"):
        build_report([a, str(tmp_path / "b" / "grpo-seed1")], str(tmp_path / "out2"), baseline="grpo")


def test_default_ablation_base():
    assert default_ablation_base(["grpo", "mel_code", "mel_code_no_replay"]) == "mel_code"
    # mel prefixes all three mel_code names, but it is the longest prefix (the parent) of mel_code only
    names = ["mel", "mel_code", "mel_code_no_replay", "mel_code_no_contrastive"]
    assert default_ablation_base(names) == "mel_code"
    assert default_ablation_base(["mel", "mel_code", "mel_code_no_replay"]) == "mel_code"  # 1-1 tie: the longer
    assert default_ablation_base(["grpo", "mel_code", "rmel"]) is None
    assert default_ablation_base(["grpo"]) is None


def test_config_changes():
    base = flatten_config({"mel": {"replay": "reexecute", "max_new_tokens": [48, 160, 96]}, "run": {"name": "a"}})
    assert base == {"mel.replay": "reexecute", "mel.max_new_tokens": [48, 160, 96], "run.name": "a"}
    other = {"mel.replay": "none", "mel.max_new_tokens": [48, 160, 96], "run.name": "b", "revise.budget": 4}
    assert config_changes(base, other) == ("mel.replay: reexecute → none", "revise.budget: – → 4")
    assert config_changes(base, None) == ("config unknown",)
    assert config_changes(base, dict(base)) == ()


def test_markdown_and_html_escape_text():
    blocks = [tables.Heading("a <b> & c", 1), tables.Paragraph("run `x<y>` | z"),
              tables.Table(("name", "value\nn=3"), ((tables.Cell("p|q"), tables.Cell("1.0", bold=True)),
                                                      (tables.Cell("<script>"), tables.Cell(tables.MISSING))))]
    md = tables.to_markdown(blocks)
    assert "| p\\|q | **1.0** |" in md and "| name | value n=3 |" in md and "| <script> | – |" in md
    page = tables.to_html(blocks, "t<")
    assert "<title>t&lt;</title>" in page and "<h1>a &lt;b&gt; &amp; c</h1>" in page
    assert "<code>x&lt;y&gt;</code>" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "<th>value<br>n=3</th>" in page and '<td class="num"><b>1.0</b></td>' in page
    with pytest.raises(ValueError, match="header"):
        tables.Table(("a", "b"), ((tables.Cell("x"),),))


def test_number_formats():
    assert (tables.pct(0.4567), tables.pct(None), tables.points(0.031), tables.points(-0.125)) == (
        "45.7", "–", "+3.1", "-12.5")
    assert (tables.p_value(0.04321), tables.p_value(1 / 10001)) == ("0.043", "<0.001")
    assert tables.step_list([3, 0, 1, 2, 5, 7, 8]) == "0–3, 5, 7, 8"
    assert tables.step_list([]) == "–"


def test_plot_helpers_by_hand():
    assert plots.peak_point([(0, 0.5), (1, 0.7), (2, 0.7), (3, 0.6)]) == (1, 0.7)  # the earliest of a tie
    with pytest.raises(ValueError, match="no points"):
        plots.peak_point([])
    # trailing mean, window 2: 1, (1+3)/2, (3+5)/2
    assert plots.moving_mean([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
    # 100 and 95 are closer than 10: a cluster centred on 97.5, 5 either side; 50 stays put
    assert plots.spread([100.0, 95.0, 50.0], 10.0) == [102.5, 92.5, 50.0]
    # 100, 95 -> 102.5, 92.5; 88 then overlaps 92.5: one cluster of three around (100+95+88)/3 = 94.33
    assert plots.spread([100.0, 95.0, 88.0, 20.0], 10.0) == pytest.approx([104.3333, 94.3333, 84.3333, 20.0], 1e-4)
    assert plots.spread([], 10.0) == []


def test_plot_panels_single_step_and_empty_panel(tmp_path):
    styles = plots.method_colours(["a", "b"])
    path = str(tmp_path / "fig" / "v.png")
    peaks = plots.plot_panels(path, [("one step", {"a": [(0, 0.4)], "b": [(0, 0.4)]}), ("none", {})], styles,
                              title="t", xlabel="x", ylabel="y", percent=True, mark_peaks=True)
    assert peaks == {"one step": {"a": (0, 0.4), "b": (0, 0.4)}, "none": {}}
    assert Path(path).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_panels(path, [], styles, title="t", xlabel="x", ylabel="y")


def test_old_config_and_a_benchmark_not_evaluated_at_the_final_step(tmp_path):
    run = Path(make_run(tmp_path, "mel_code", benchmarks=("mbpp",)))
    cfg = (run / "config.yaml").read_text().replace("mel:\n", "mel:\n  retired_option: 3\n")
    (run / "config.yaml").write_text(cfg)
    write_eval(run, "mel_code", steps=(0, 1, 2, 3), benchmarks=("mbpp",))
    # humaneval_plus evaluated only up to step 2: appended to the summary, not at the final step 3
    rows = artifacts.read_table(str(run / "eval" / "summary.parquet"), EVAL_SUMMARY).to_pylist()
    rows.append({**rows[0], "benchmark": "humaneval_plus", "column": "base", "step": 2, "value": 0.5})
    artifacts.write_rows(str(run / "eval" / "summary.parquet"), rows, EVAL_SUMMARY)
    report = build_report([str(run)], str(tmp_path / "out"))
    [loaded] = report.runs
    assert loaded.name == "mel_code" and loaded.config["mel.retired_option"] == 3
    assert any("does not load with this version" in w and "retired_option" in w for w in report.warnings)
    he = ScoreKey("humaneval_plus", "base", "greedy", "pass@1")
    assert any("humaneval_plus (base) pass@1 was evaluated up to step 2" in w for w in report.warnings)
    assert he in report.peaks and report.peaks[he] == {"mel_code": (2, 0.5)}  # still on the validation curve
    assert he not in report.keys  # but not in the main table


def test_training_diagnostics_by_hand(tmp_path):
    """The NLL/RL gradient-norm ratio (mean and range over steps with M), the all-negative groups rescued (count and
    share), R-MEL's prefix-constraint rejections and the token match (summed tokens / summed allowance) of each run;
    a GRPO run has no row."""
    dirs = []
    for method, extra in (("grpo", None), ("mel_code", None), ("rmel", (3, 0.5, 1)), ("mel_extra", (0, 1.0, 2))):
        run_dir = tmp_path / f"{method}-0123456789"
        write_config(run_dir, method)
        rows = []
        for s in range(2):
            row = dict.fromkeys(METRICS.names)
            row.update(step=s, reward_mean=0.1, p_pair=0.5)
            if method != "grpo":
                row.update(nll_coef=0.004, nll_rl_grad_ratio=(0.2, None)[s] if method == "mel_code" else 1.5 + s)
            if extra:
                row.update(revise_groups=2, rescued_groups=extra[2] * s, filter_rejections=extra[0] + s,
                           revision_tokens=int(100 * extra[1]), token_allowance=100, token_match=extra[1])
            rows.append(row)
        artifacts.write_rows(str(run_dir / "metrics.parquet"), rows, METRICS, steps=2)
        dirs.append(str(run_dir))
    rep = build_report(dirs, str(tmp_path / "report"), n_resamples=R)
    text = rep.markdown.split("## Training diagnostics", 1)[1].split("\n## ", 1)[0]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in text.splitlines() if line.startswith("| ") and "---" not in line and "run" not in line[:6]}
    assert "grpo" not in lines
    assert lines["mel_code"] == ["2", "0.004", "0.2", "0.2–0.2", MISSING, MISSING, MISSING, MISSING, MISSING]
    assert lines["rmel"] == ["2", "0.004", "2", "1.5–2.5", "4", "1 (25%)", "7", "100/200", "0.500"]
    assert lines["mel_extra"] == ["2", "0.004", "2", "1.5–2.5", "4", "2 (50%)", "1", "200/200", "1.000"]
