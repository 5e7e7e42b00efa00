"""Before and after training: a run's final checkpoint against its base model on each evaluated score, with the paired
bootstrap CI of the difference (over problems, `mel.eval.stats.paired_bootstrap`), as the demo ends.

    from mel.eval.before_after import before_after, before_after_table
    rows = before_after("runs/demo-0123456789")        # needs `mel eval RUN_DIR` of step 0 and the final step
    mel.console.show(before_after_table(rows))

A score is compared where both the base (step 0) and the final evaluated step have it; each problem's value (pass or
not for greedy Pass@1, the share of passing samples for Avg@n) is paired by problem id.
"""
from __future__ import annotations

from dataclasses import dataclass

from mel.console import table
from mel.eval.compare import problem_reader
from mel.eval.runs import ScoreKey, load_run
from mel.eval.stats import BootstrapResult, paired_bootstrap

BASE_STEP = 0


@dataclass(frozen=True)
class BeforeAfter:
    key: ScoreKey
    final_step: int
    before: float  # the base model's mean over the paired problems
    after: float  # the final checkpoint's
    result: BootstrapResult  # of after - before


def before_after(run_dir: str, *, n_resamples: int = 10000, seed: int = 0, alpha: float = 0.05) -> list[BeforeAfter]:
    """Every score evaluated at both step 0 and the run's final evaluated step, final minus base."""
    run = load_run(run_dir)
    final = run.final_step
    if final is None or final == BASE_STEP or BASE_STEP not in run.scores:
        return []
    values = problem_reader()
    rows = []
    for key in sorted(set(run.scores[BASE_STEP]) & set(run.scores[final]), key=lambda k: k.order):
        base = values(run, key, run.scores[BASE_STEP][key])
        last = values(run, key, run.scores[final][key])
        if base is None or last is None:
            continue
        ids = sorted(set(base) & set(last))
        if not ids:
            continue
        a, b = [last[i] for i in ids], [base[i] for i in ids]
        rows.append(BeforeAfter(key, final, sum(b) / len(b), sum(a) / len(a),
                                paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, alpha=alpha)))
    return rows


def before_after_table(rows: list[BeforeAfter]):
    """A rich table: benchmark, score, base, final, the difference with its 95% CI, p, problems."""
    out = table("benchmark", "score", "base", "final", "final - base [95% CI]", "p", "problems",
                left=("benchmark", "score"))
    for r in rows:
        res = r.result
        out.add_row(r.key.where, r.key.what, f"{100 * r.before:.1f}%", f"{100 * r.after:.1f}%",
                    f"{100 * res.diff:+.1f} [{100 * res.ci_low:+.1f}, {100 * res.ci_high:+.1f}] pts",
                    f"{res.p_value:.3f}", str(res.n))
    return out
