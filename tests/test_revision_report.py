"""Revision analytics, values worked by hand: one step's summary, the per-group table (difficulty across steps,
log-prob quintiles, the accepted attempt's LCP), the by-bucket table, the Parquet artifacts, and the figure (a PNG
for normal, empty, single-mode and all-failed input). Pure Python + pyarrow + matplotlib Agg; no model."""
from __future__ import annotations

import math
import subprocess
import sys

import pyarrow as pa
import pytest

from mel import artifacts
from mel.experience.revision_report import (
    BUCKET_SCHEMA, BUCKETS_FILE, GROUP_SCHEMA, GROUPS_FILE, plot_revisions, run_analytics, step_summary, tau_key,
    write_analytics,
)
from mel.schemas import REVISIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def attempt(step: int, prompt_index: int, problem_id: str, k: int, tau: float, gen: int, *, passed: bool = False,
            lcp: float | None = 0.0, accepted: bool | None = None, logprob: float = -0.5, mode: str = "rmel") -> dict:
    """One REVISIONS row; ``accepted`` defaults to passed and lcp >= tau (rmel) or passed (extra)."""
    if mode == "extra":
        lcp = None
    if accepted is None:
        accepted = passed and (mode == "extra" or lcp >= tau)
    return {"step": step, "prompt_index": prompt_index, "problem_id": problem_id, "mode": mode,
            "seed_sample_index": 0, "seed_tokens": 100, "seed_mean_logprob": logprob, "group_failed": 8,
            "attempt": k, "tau": tau, "prefix_tokens": int(tau * 100) if mode == "rmel" else 0,
            "generated_tokens": gen, "max_tokens": 128, "token_allowance": 200, "passed": passed, "lcp": lcp,
            "accepted": accepted, "status": "ok", "text": ""}


# Step 0: problems A, B, C all-negative (3 of 8 groups). Step 1: D, and B again.
STEP0 = [
    attempt(0, 0, "A", 0, 0.7, 30, lcp=0.7, logprob=-0.5),
    attempt(0, 0, "A", 1, 0.5, 50, passed=True, lcp=0.6, logprob=-0.5),  # accepted: A rescued at tau 0.5
    attempt(0, 1, "B", 0, 0.7, 30, passed=True, lcp=0.4, logprob=-0.9),  # passed, rejected by LCP (0.4 < 0.7)
    attempt(0, 1, "B", 1, 0.5, 50, lcp=0.5, logprob=-0.9),
    attempt(0, 1, "B", 2, 0.3, 70, lcp=0.3, logprob=-0.9),
    attempt(0, 1, "B", 3, 0.7, 30, lcp=0.7, logprob=-0.9),  # budget B = 4 spent: B not rescued
    attempt(0, 2, "C", 0, 0.7, 20, passed=True, lcp=0.8, logprob=-0.1),  # accepted at the first attempt
]
STEP1 = [
    attempt(1, 0, "D", 0, 0.7, 10, lcp=0.7, logprob=-0.3),
    attempt(1, 0, "D", 1, 0.5, 10, lcp=0.5, logprob=-0.3),
    attempt(1, 0, "D", 2, 0.3, 10, lcp=0.3, logprob=-0.3),
    attempt(1, 0, "D", 3, 0.7, 10, lcp=0.7, logprob=-0.3),
    attempt(1, 1, "B", 0, 0.7, 15, passed=True, lcp=0.9, logprob=-0.7),  # B, all-negative a second time, rescued
]
RUN = STEP0 + STEP1


def test_rows_fit_the_revisions_schema():
    assert list(RUN[0]) == REVISIONS.names
    pa.Table.from_pylist(RUN, schema=REVISIONS)


def test_step_summary_by_hand():
    s = step_summary(STEP0, all_negative_groups=3, num_groups=8)
    assert s["step"] == 0
    assert s["all_negative_rate"] == pytest.approx(3 / 8)
    assert (s["revise_groups"], s["rescued_groups"]) == (3, 2)
    assert s["rescue_rate"] == pytest.approx(2 / 3)
    assert s["attempts"] == 7
    assert s["generated_tokens"] == 30 + 50 + 30 + 50 + 70 + 30 + 20
    # tau 0.7: A0, B0, B3, C0 (C0 accepted); 0.5: A1 (accepted), B1; 0.3: B2
    assert s["attempts_per_tau"] == {"0.7": 4, "0.5": 2, "0.3": 1}
    assert list(s["success_rate_per_tau"]) == ["0.7", "0.5", "0.3"]  # schedule order
    assert s["success_rate_per_tau"] == pytest.approx({"0.7": 0.25, "0.5": 0.5, "0.3": 0.0})
    assert s["passed_rejected_by_lcp"] == 1
    assert s["token_match"] == pytest.approx(280 / (3 * 200))  # tokens over the 3 groups' allowances


def test_step_summary_without_revisions_and_bad_arguments():
    s = step_summary([], all_negative_groups=0, num_groups=4)
    assert (s["revise_groups"], s["rescued_groups"], s["attempts"], s["generated_tokens"]) == (0, 0, 0, 0)
    assert s["rescue_rate"] is None and s["success_rate_per_tau"] == {} and s["all_negative_rate"] == 0.0
    with pytest.raises(ValueError, match="one step"):
        step_summary(RUN, all_negative_groups=3, num_groups=8)
    with pytest.raises(ValueError, match="num_groups"):
        step_summary([], all_negative_groups=0, num_groups=0)
    with pytest.raises(ValueError, match="all-negative"):
        step_summary(STEP0, all_negative_groups=2, num_groups=8)  # 3 groups revised, 2 all-negative
    with pytest.raises(ValueError, match="unknown revision mode"):
        step_summary([{**STEP0[0], "mode": "magic"}], all_negative_groups=1, num_groups=8)


def test_tau_key():
    assert [tau_key(t) for t in (0.7, 0.5, 0.1 + 0.2, 1)] == ["0.7", "0.5", "0.3", "1.0"]


def test_group_table_by_hand():
    groups, _ = run_analytics(RUN)
    got = {(g["step"], g["problem_id"]): g for g in groups}
    assert [(g["step"], g["prompt_index"]) for g in groups] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    # difficulty: B is all-negative in step 0 (1st time) and step 1 (2nd); the others once
    assert {k: g["difficulty"] for k, g in got.items()} == {(0, "A"): 1, (0, "B"): 1, (0, "C"): 1, (1, "D"): 1,
                                                            (1, "B"): 2}
    # quintiles over the run's 5 groups: -0.9 (B@0) < -0.7 (B@1) < -0.5 (A) < -0.3 (D) < -0.1 (C)
    assert {k: g["logprob_quintile"] for k, g in got.items()} == {(0, "B"): 1, (1, "B"): 2, (0, "A"): 3,
                                                                  (1, "D"): 4, (0, "C"): 5}
    assert {k: g["rescued"] for k, g in got.items()} == {(0, "A"): True, (0, "B"): False, (0, "C"): True,
                                                         (1, "D"): False, (1, "B"): True}
    assert {k: g["lcp"] for k, g in got.items()} == {(0, "A"): 0.6, (0, "B"): None, (0, "C"): 0.8, (1, "D"): None,
                                                     (1, "B"): 0.9}  # the accepted attempt's, not the last one's
    assert {k: g["accepted_tau"] for k, g in got.items()} == {(0, "A"): 0.5, (0, "B"): None, (0, "C"): 0.7,
                                                              (1, "D"): None, (1, "B"): 0.7}
    assert {k: (g["attempts"], g["generated_tokens"]) for k, g in got.items()} == {
        (0, "A"): (2, 80), (0, "B"): (4, 180), (0, "C"): (1, 20), (1, "D"): (4, 40), (1, "B"): (1, 15)}
    assert {k: g["filter_rejections"] for k, g in got.items()} == {(0, "A"): 0, (0, "B"): 1, (0, "C"): 0,
                                                                   (1, "D"): 0, (1, "B"): 0}
    assert got[(0, "B")]["token_match"] == pytest.approx(180 / 200)
    assert list(groups[0]) == GROUP_SCHEMA.names


def by_bucket(buckets: list[dict], mode: str = "rmel") -> dict[tuple[str, float], dict]:
    return {(b["grouping"], b["value"]): b for b in buckets if b["mode"] == mode}


def test_bucket_table_by_hand():
    _, buckets = run_analytics(RUN)
    b = by_bucket(buckets)
    assert list(buckets[0]) == BUCKET_SCHEMA.names
    d1, d2 = b[("difficulty", 1.0)], b[("difficulty", 2.0)]
    assert (d1["unit"], d1["n"], d1["groups"], d1["attempts"], d1["successes"]) == ("group", 4, 4, 11, 2)
    assert d1["success_rate"] == pytest.approx(0.5)
    assert d1["mean_generated_tokens"] == pytest.approx((80 + 180 + 20 + 40) / 4)
    assert (d2["n"], d2["successes"], d2["success_rate"], d2["mean_generated_tokens"]) == (1, 1, 1.0, 15.0)
    assert {v: b[("logprob_quintile", float(v))]["success_rate"] for v in range(1, 6)} == {
        1: 0.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 1.0}
    t7, t5, t3 = b[("tau", 0.7)], b[("tau", 0.5)], b[("tau", 0.3)]
    # tau 0.7: A0, B0, B3, C0 (acc) | D0, D3, B@1 0 (acc): 7 attempts over 5 groups, 2 accepted
    assert (t7["unit"], t7["n"], t7["groups"], t7["attempts"], t7["successes"]) == ("attempt", 7, 5, 7, 2)
    assert t7["success_rate"] == pytest.approx(2 / 7)
    assert t7["mean_generated_tokens"] == pytest.approx((30 + 30 + 30 + 20 + 10 + 10 + 15) / 7)
    assert (t5["n"], t5["groups"], t5["successes"], t5["mean_generated_tokens"]) == (3, 3, 1, pytest.approx(110 / 3))
    assert (t3["n"], t3["successes"], t3["success_rate"]) == (2, 0, 0.0)
    assert [(x["grouping"], x["value"]) for x in buckets][:2] == [("difficulty", 1.0), ("difficulty", 2.0)]


def test_quintiles_with_few_groups_ties_and_missing_logprobs():
    rows = [attempt(0, i, f"p{i}", 0, 0.7, 5, logprob=lp) for i, lp in enumerate([-1.0, -0.2, -0.6])]
    groups, _ = run_analytics(rows)
    assert [g["logprob_quintile"] for g in groups] == [1, 3, 2]  # 3 groups -> 3 bins
    rows = [attempt(0, i, f"p{i}", 0, 0.7, 5, logprob=lp)
            for i, lp in enumerate([-0.5, -0.5, -0.1, None, math.nan, -0.9, -0.3, -0.2])]
    groups, buckets = run_analytics(rows)
    # 6 finite values, ranks -0.9:0, -0.5:1,1 (tie -> lowest rank), -0.3:3, -0.2:4, -0.1:5; bin = rank*5//6 + 1
    assert [g["logprob_quintile"] for g in groups] == [1, 1, 5, None, None, 1, 3, 4]
    assert sum(x["n"] for x in buckets if x["grouping"] == "logprob_quintile") == 6


def test_modes_are_analysed_as_separate_runs():
    extra = [attempt(0, 0, "A", 0, 0.7, 40, mode="extra"),
             attempt(1, 0, "A", 0, 0.7, 40, passed=True, mode="extra")]
    groups, buckets = run_analytics(RUN + extra)
    ex = [g for g in groups if g["mode"] == "extra"]
    assert [(g["step"], g["difficulty"], g["rescued"], g["lcp"]) for g in ex] == [(0, 1, False, None),
                                                                                  (1, 2, True, None)]
    assert [g["logprob_quintile"] for g in ex] == [1, 1]  # equal log-probs tie into bin 1
    assert [g["difficulty"] for g in groups if g["mode"] == "rmel"] == [1, 1, 1, 1, 2]  # A's extra rows don't count
    assert by_bucket(buckets, "extra")[("tau", 0.7)]["success_rate"] == 0.5
    assert by_bucket(buckets) == by_bucket(run_analytics(RUN)[1])


def test_write_analytics_schemas(tmp_path):
    groups_uri, buckets_uri = write_analytics(RUN, str(tmp_path / "report"), run="hand")
    assert groups_uri.endswith(GROUPS_FILE) and buckets_uri.endswith(BUCKETS_FILE)
    groups = artifacts.read_table(groups_uri, GROUP_SCHEMA)
    buckets = artifacts.read_table(buckets_uri, BUCKET_SCHEMA)
    assert groups.schema.names == GROUP_SCHEMA.names and groups.schema.equals(GROUP_SCHEMA)
    assert buckets.schema.names == BUCKET_SCHEMA.names and buckets.schema.equals(BUCKET_SCHEMA)
    assert groups.num_rows == 5
    assert groups.column("difficulty").to_pylist() == [1, 1, 1, 1, 2]
    assert artifacts.read_manifest(groups_uri)["run"] == "hand"
    empty_uris = write_analytics([], str(tmp_path / "empty"))
    assert artifacts.read_table(empty_uris[0], GROUP_SCHEMA).num_rows == 0


def assert_png(path) -> None:
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


@pytest.mark.parametrize("rows", [
    RUN,  # several steps, one mode
    RUN + [attempt(0, 0, "A", 0, 0.7, 40, mode="extra"), attempt(1, 0, "Z", 0, 0.5, 9, passed=True, mode="extra")],
    [],  # no all-negative groups
    [attempt(3, 0, "Q", k, 0.7, 12, mode="extra") for k in range(4)],  # one step, extra only, all failed
    [attempt(0, 0, "Q", k, t, 12, lcp=None if k else 0.5) for k, t in enumerate((0.7, 0.5))],  # a null LCP
], ids=["rmel", "both-modes", "empty", "extra-only-all-failed", "null-lcp"])
def test_plot_revisions_writes_a_png(tmp_path, rows):
    path = tmp_path / "sub" / "revisions.png"
    assert plot_revisions(rows, str(path), title="test") == str(path)
    assert_png(path)


def test_module_imports_no_matplotlib():
    code = "import sys, mel.experience.revision_report; print(any(m.startswith('matplotlib') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
