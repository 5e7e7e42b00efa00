"""The report flow: ``mel report`` inside Prefect, with the report published as a markdown artifact (the tables,
the bootstrap comparisons and the paths of the PNGs) on the flow run's page.

    python -m flows.report reports/cmp runs/grpo-... runs/mel_code-...

Served as the ``mel-report`` deployment by ``deploy/deploy.py``.
"""
from __future__ import annotations

import sys

from prefect import flow


@flow(name="mel-report", log_prints=False)
def report(run_dirs: list[str], out: str, baseline: str | None = None, ablation_base: str | None = None,
           n_resamples: int = 10000, seed: int = 0) -> str:
    """Compare ``run_dirs`` into ``out`` (report.md/.html, PNGs, CSVs); returns the Markdown report's path.

    Args:
        run_dirs: Training run directories to compare (evaluate them first: the mel-eval flow on each).
        out: Where the report goes: report.md, report.html, the PNG figures and CSV tables.
        baseline: The method every other is compared against (paired bootstrap CIs, p-values); default grpo.
        ablation_base: The method the ablation table is relative to.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    from prefect.artifacts import create_markdown_artifact

    from mel.eval.report import build_report

    built = build_report(run_dirs, out, baseline=baseline, ablation_base=ablation_base, n_resamples=n_resamples,
                         seed=seed)
    figures = "\n".join(f"- `{path}`" for path in built.figures.values())
    create_markdown_artifact(f"{built.markdown}\n\n## Figures\n\n{figures}\n", key="mel-report",
                             description=f"comparison of {len(run_dirs)} runs, written to {out}")
    return str(built.markdown_path)


if __name__ == "__main__":
    report(sys.argv[2:], sys.argv[1])
