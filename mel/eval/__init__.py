"""Evaluation: benchmarks, the papers' metrics, and comparison reports. Part of the pure core (no Prefect/Ray/vLLM).

- `mel.eval.benchmarks`: the benchmark registry and its validating loaders.
- `mel.eval.metrics`: greedy Pass@1, Avg@n and the unbiased Pass@k estimator, per problem and per benchmark.
- `mel.eval.stats`: paired bootstrap confidence intervals and p-values on per-problem outcomes.
- `mel.eval.evalplus`: the HumanEval+ / MBPP+ benchmarks (prompts, base and plus columns) over `mel.verify.evalplus`
  (rows, reference outputs run once and cached on disk), which ``mel verify code`` shares.
- `mel.eval.plan`: the cells of a request, under the eval settings (`mel.eval.config.EvalConfig`,
  ``configs/eval/default.yaml``).
- `mel.eval.report`: the comparison report of ``mel report`` over `mel.eval.runs` (what a run directory holds):
  `mel.eval.compare` computes it (each run against the baseline, the ablations), `mel.eval.seeds` pools the runs of
  a method over their seeds (means, paired differences, the power line), `mel.eval.sections` lays out its sections,
  `mel.eval.tables` renders them to Markdown and HTML, `mel.eval.plots` draws its PNGs.

The eval stages (generate, verify) live in `mel.eval.cells`; the flow in ``flows/evaluate.py``.
"""
