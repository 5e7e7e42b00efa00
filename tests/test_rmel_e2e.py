"""End-to-end R-MEL and MEL+Extra on the tiny config through Prefect. On easy code tasks the tiny random model fails
every sample, so every group is all-negative: R-MEL spends its B attempts on every group, MEL+Extra spends exactly
R-MEL's token allowance per group on fresh full-length rollouts, and both write one revision row per attempt and
report the token match. Marked e2e (CI runs them)."""
from __future__ import annotations

from collections import defaultdict

import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas

from test_mel_e2e import _train

pytestmark = pytest.mark.e2e
ALL_NEGATIVE = ["data.taskset=easy_code", "run.steps=1", "data.prompts_per_step=3", "rollout.max_new_tokens=24"]


def _revision_rows(run_dir) -> list[dict]:
    uri = str(run_dir / "step_0000" / "revisions.parquet")
    assert artifacts.is_complete(uri)
    assert pq.read_schema(uri).names == schemas.REVISIONS.names
    return pq.read_table(uri).to_pylist()


def test_rmel_and_its_compute_matched_control_spend_the_same_budget(prefect_harness, tmp_path):
    _train("rmel", tmp_path / "rmel", ALL_NEGATIVE)
    _train("mel_extra", tmp_path / "extra", ALL_NEGATIVE)
    rmel, extra = _revision_rows(tmp_path / "rmel"), _revision_rows(tmp_path / "extra")
    assert len(rmel) == 3 * 4  # 3 all-negative groups x B = 4 attempts, nothing rescued
    assert [r["tau"] for r in rmel[:4]] == [0.7, 0.5, 0.3, 0.7]
    assert all(r["prefix_tokens"] == int(r["tau"] * r["seed_tokens"] + 1e-9) for r in rmel)
    assert all(r["generated_tokens"] <= r["max_tokens"] == 24 - r["prefix_tokens"] for r in rmel)
    allowance = {r["prompt_index"]: r["token_allowance"] for r in rmel}
    assert all(a == sum(r["max_tokens"] for r in rmel if r["prompt_index"] == g) for g, a in allowance.items())
    assert all(r["prefix_tokens"] == 0 and r["lcp"] is None for r in extra)
    spent = defaultdict(int)
    for r in extra:  # full-length fresh rollouts, the last one cut to what is left of the allowance
        assert r["max_tokens"] == min(24, r["token_allowance"] - spent[r["prompt_index"]])
        spent[r["prompt_index"]] += max(r["generated_tokens"], 1)
    assert spent == allowance  # nothing passed: each group spent exactly R-MEL's allowance for its seed
    tokens_rmel = sum(r["generated_tokens"] for r in rmel)
    (m,) = pq.read_table(tmp_path / "rmel" / "metrics.parquet").to_pylist()
    assert m["revise_groups"] == 3 and m["revision_attempts"] == 12 and m["revision_tokens"] == tokens_rmel
    assert m["rescued_groups"] == 0 and m["filter_rejections"] == 0
    assert m["token_allowance"] == sum(allowance.values())
    assert m["token_match"] == pytest.approx(tokens_rmel / m["token_allowance"])
    (mx,) = pq.read_table(tmp_path / "extra" / "metrics.parquet").to_pylist()
    assert mx["token_allowance"] == m["token_allowance"]
    assert mx["revision_tokens"] == sum(r["generated_tokens"] for r in extra)
    report = tmp_path / "rmel" / "report"
    assert (report / "revisions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups = pq.read_table(report / "revision_groups.parquet").to_pylist()
    assert len(groups) == 3 and not any(g["rescued"] for g in groups)


def _register_ends_with_vowel() -> str:
    """A task a prefix-primed continuation can fix (only the end of the text counts), registered for this process."""
    from mel.data import TASKSETS, Problem, register_taskset

    name = "test_ends_with_vowel"
    if name not in TASKSETS:
        register_taskset(name, description="test: reply ending with a vowel")(
            lambda: [Problem(f"vowel/{i}", "regex", f"Reply with text #{i} ending in a vowel.",
                             answer=r"^[\s\S]*[AaEeIiOoUu]$") for i in range(12)])
    return name


def test_rmel_rescues_groups_when_a_continuation_can_pass(prefect_harness, tmp_path):
    """Rescued all-negative groups become pairs marked as revisions; a group stops at its first accepted attempt."""
    run_dir = tmp_path / "rmel_vowel"
    _train("rmel", run_dir, [f"data.taskset={_register_ends_with_vowel()}", "run.steps=1",
                             "data.prompts_per_step=12", "rollout.group_size=2", "revise.lcp_tau=0.0"])
    rows = _revision_rows(run_dir)
    pairs = pq.read_table(run_dir / "step_0000" / "revised_pairs.parquet").to_pylist()
    rescued = {r["prompt_index"] for r in rows if r["accepted"]}
    assert rescued and {p["prompt_index"] for p in pairs if p["origin"] == "revision"} == rescued
    for r in rows:
        later = [x for x in rows if x["prompt_index"] == r["prompt_index"] and x["attempt"] > r["attempt"]]
        assert not (r["accepted"] and later)
    meta = pq.read_table(run_dir / "step_0000" / "meta_experiences.parquet").to_pylist()
    assert {m["prompt_index"] for m in meta if m["origin"] == "revision"} == rescued  # built like natural pairs
