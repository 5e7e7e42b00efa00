"""The math verifier's worker pool: a stuck item cannot stall the others, shortcuts only ever decide passes, caches
can be emptied."""
from __future__ import annotations

from mel.verify import math as vm
from mel.verify.math import clear_math_caches, verify_math


def test_a_stuck_item_is_killed_and_every_other_item_is_still_answered() -> None:
    # Each needs math-verify (no shortcut); the one right after the stuck item sits in the same worker behind it.
    normal = [("\\boxed{\\sqrt{4}}", "2"), ("\\boxed{\\sqrt{9}}", "3"), ("\\boxed{2^{3}}", "8"),
              ("\\boxed{x+1}", "1+x"),
              ("\\boxed{\\sqrt{16}}", "5"), ("\\boxed{(1, 2)}", "(1,2)"), ("\\boxed{\\pi}", "\\frac{2\\pi}{2}"),
              ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"), ("\\boxed{e^{0}}", "1")]
    preds = ["\\boxed{9^{9^{9^{9}}}}"] + [p for p, _ in normal]
    golds = ["2"] + [g for _, g in normal]
    assert not any(vm._surely_equal(vm.extract_answer(p), g) for p, g in normal)
    clear_math_caches()
    vs = verify_math(preds, golds, timeout_s=2.0, workers=2)
    assert vs[0].status == "timeout" and not vs[0].passed
    assert [v.status for v in vs[1:]] == ["passed", "passed", "passed", "passed", "failed", "passed", "passed",
                                          "passed", "passed"]
    assert all(v.seconds < 2.0 for v in vs[1:])


def test_shortcuts_only_decide_passes() -> None:
    clear_math_caches()
    vs = verify_math(["\\boxed{\\text{Devon}}", "\\boxed{ 0.50 }", "\\boxed{7/8}", "\\boxed{0.33}", "\\boxed{3}"],
                     ["\\text{Devon}", "\\frac{1}{2}", "0.875", "\\frac{1}{3}", "4"])
    assert [v.status for v in vs] == ["passed", "passed", "passed", "failed", "failed"]
    assert [v.seconds for v in vs[:3]] == [0.0, 0.0, 0.0]  # decided without a worker round trip
    assert "does not match" in vs[3].detail and "does not match" in vs[4].detail  # math-verify decided these
    assert vm._plain_value("\\frac{7}{8}") == vm._plain_value("0.875") and vm._plain_value("1,000") is None


def test_clear_math_caches_forgets_results_and_keeps_the_workers_working() -> None:
    assert verify_math(["\\boxed{\\sqrt{4}}"], ["2"])[0].passed
    assert vm._cache
    clear_math_caches()
    assert not vm._cache
    again = verify_math(["\\boxed{\\sqrt{4}}", "\\boxed{\\sqrt{5}}"], ["2", "2"])
    assert [v.status for v in again] == ["passed", "failed"]
