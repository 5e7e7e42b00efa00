"""Every Parquet artifact's schema, in one place. A stage writes exactly these columns, in this order.

rollouts (``step_NNNN/rollouts.parquet``): one row per sample.
    step, prompt_index (0..B-1 within the step), sample_index (0..G-1), problem_id, problem_json (the ``Problem``),
    prompt_text (the user turn), prompt_token_ids (chat-formatted prompt), completion_text, completion_token_ids,
    completion_logprobs (log-probs of the sampled tokens under the sampling distribution), finish_reason
    ("stop" | "length"), num_completion_tokens.
verdicts (``step_NNNN/verdicts.parquet``): one row per sample, same order as rollouts.
    step, prompt_index, sample_index, problem_id, passed, status (``mel.verify.types.STATUSES``), detail, reward,
    tests_passed, tests_total, seconds.
pairs (``step_NNNN/pairs.parquet``, MEL runs): one row per contrastive pair (or failing rollout, without contrast).
    origin ("natural"; R-MEL adds "revision"), plus_sample_index (-1 without y+), minus_sample_index, y_plus/y_minus
    (completion texts), minus_status/minus_detail (y-'s verdict).
experiences (``step_NNNN/experiences.parquet``): one row per pair: the pair, the builder's M (s*, C, H, category,
    the rendered ``experience_text``), ``retro_prompt`` (C_retro, the user turn M is conditioned on in the NLL term),
    ``built_ok``/``reject_reason`` (a malformed M is kept with its reason), ``gen_tokens`` (tokens generated for M).
meta_experiences (``step_NNNN/meta_experiences.parquet``): the experiences rows plus the replay verdict:
    replay (mode), replay_status, replay_detail, replay_completion, replay_tokens, accepted (kept by replay),
    selected (among the at most K accepted ones that enter this step's NLL term).
update metrics (``step_NNNN/update.parquet``) and the run's ``metrics.parquet``: one row per step; each stage's
    stats declare its columns (`mel.stages.step.StageStats.metric_columns`; the paper's table:
    `mel.stages.table.METRICS`).

Evaluation (``mel eval``; see `mel.eval`), under an eval directory (``RUN_DIR/eval`` for a run): each evaluated
(checkpoint, benchmark, sampling) triple is a *cell* ``cells/<benchmark>/<checkpoint>-<sampling>-<key>/`` with
eval_generations (``generations.parquet``): one row per sample: the prompt, the completion and its token count.
eval_results (``results.parquet``): one row per (sample, column): the verdict against that column's tests. A column
    is ``main`` for most benchmarks; EvalPlus benchmarks (HumanEval+, MBPP+) have ``base`` and ``plus``.
eval_problems (``problems.parquet``): one row per (problem, column, metric): the per-problem value (0/1 for greedy
    pass@1, c/n for avg@n, the unbiased estimate for pass@k), what the paired bootstrap of ``mel report`` resamples.
eval_summary (``summary.parquet`` at the eval directory's root): one row per (cell, column, metric): the benchmark
    score (mean over problems) with where it came from.

Standalone verification (``mel verify code`` / ``mel verify math``; see `mel.verify.jsonl`), at the ``--out`` URI:
verify_code / verify_math: one row per verified input row, in input order: these columns, then every input field the
    verifier does not consume, carried unchanged as extra columns (their types follow the values; the manifest lists
    them).
"""
from __future__ import annotations

import pyarrow as pa

from mel.artifacts import TIMING

ROLLOUTS = pa.schema([
    ("step", pa.int32()),
    ("prompt_index", pa.int32()),
    ("sample_index", pa.int32()),
    ("problem_id", pa.string()),
    ("problem_json", pa.string()),
    ("prompt_text", pa.string()),
    ("prompt_token_ids", pa.list_(pa.int32())),
    ("completion_text", pa.string()),
    ("completion_token_ids", pa.list_(pa.int32())),
    ("completion_logprobs", pa.list_(pa.float32())),
    ("finish_reason", pa.string()),
    ("num_completion_tokens", pa.int32()),
])

VERDICTS = pa.schema([
    ("step", pa.int32()),
    ("prompt_index", pa.int32()),
    ("sample_index", pa.int32()),
    ("problem_id", pa.string()),
    ("passed", pa.bool_()),
    ("status", pa.string()),
    ("detail", pa.string()),
    ("reward", pa.float32()),
    ("tests_passed", pa.int32()),
    ("tests_total", pa.int32()),
    pa.field("seconds", pa.float32(), metadata=TIMING),
])

PAIRS = pa.schema([
    ("step", pa.int32()),
    ("prompt_index", pa.int32()),
    ("pair_index", pa.int32()),
    ("problem_id", pa.string()),
    ("problem_json", pa.string()),
    ("origin", pa.string()),
    ("plus_sample_index", pa.int32()),
    ("minus_sample_index", pa.int32()),
    ("y_plus", pa.string()),
    ("y_minus", pa.string()),
    ("minus_status", pa.string()),
    ("minus_detail", pa.string()),
])

EXPERIENCES = pa.schema(list(PAIRS) + [
    ("builder", pa.string()),
    ("category", pa.string()),
    ("bifurcation_step", pa.string()),
    ("critique", pa.string()),
    ("heuristic", pa.string()),
    ("experience_text", pa.string()),
    ("retro_prompt", pa.string()),
    ("built_ok", pa.bool_()),
    ("reject_reason", pa.string()),
    ("gen_tokens", pa.int32()),
])

META_EXPERIENCES = pa.schema(list(EXPERIENCES) + [
    ("replay", pa.string()),
    ("replay_status", pa.string()),
    ("replay_detail", pa.string()),
    ("replay_completion", pa.string()),
    ("replay_tokens", pa.int32()),
    ("accepted", pa.bool_()),
    ("selected", pa.bool_()),
])

REVISIONS = pa.schema([  # R-MEL / MEL+Extra (``step_NNNN/revisions.parquet``): one row per continuation attempt
    ("step", pa.int32()),
    ("prompt_index", pa.int32()),
    ("problem_id", pa.string()),
    ("mode", pa.string()),  # "rmel" (prefix-primed revision) or "extra" (fresh rollout, the compute-matched control)
    ("seed_sample_index", pa.int32()),  # the seed y- (R-MEL's choice; the group's y- for the pair either way)
    ("seed_tokens", pa.int32()),  # |y-|
    ("seed_mean_logprob", pa.float64()),  # mean token log-prob of y- under the sampling policy
    ("group_failed", pa.int32()),  # |Y-| (= G for an all-negative group)
    ("attempt", pa.int32()),  # 0..B-1
    ("tau", pa.float64()),  # truncation ratio of the attempt (rmel); 0.0 (extra: a fresh rollout keeps no prefix)
    ("prefix_tokens", pa.int32()),  # floor(tau * |y-|) (rmel); 0 (extra)
    ("generated_tokens", pa.int32()),  # tokens the policy generated in this attempt
    ("max_tokens", pa.int32()),  # the attempt's cap of new tokens
    ("token_allowance", pa.int32()),  # the group's: new tokens R-MEL's B attempts may generate (MEL+Extra's budget)
    ("passed", pa.bool_()),  # the revised (or fresh) rollout passed the verifier
    ("lcp", pa.float64()),  # LCP(y_rev, y-) / |y-| (rmel); null (extra)
    ("accepted", pa.bool_()),  # passed and (rmel) kept the prefix constraint; the group is rescued
    ("status", pa.string()),  # the verdict's status
    ("text", pa.string()),  # the revised / fresh rollout's text
])

EVAL_GENERATIONS = pa.schema([
    ("benchmark", pa.string()),
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("prompt_text", pa.string()),
    ("completion_text", pa.string()),
    ("num_completion_tokens", pa.int32()),
    ("finish_reason", pa.string()),
])

EVAL_RESULTS = pa.schema([
    ("benchmark", pa.string()),
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("column", pa.string()),  # "main", or "base" / "plus" for EvalPlus benchmarks
    ("passed", pa.bool_()),
    ("status", pa.string()),  # mel.verify.types.STATUSES
    ("detail", pa.string()),
    pa.field("seconds", pa.float32(), metadata=TIMING),
])

EVAL_PROBLEMS = pa.schema([
    ("benchmark", pa.string()),
    ("column", pa.string()),
    ("problem_id", pa.string()),
    ("metric", pa.string()),  # "pass@1" (greedy), "avg@n", "pass@k" (sampled, unbiased estimator)
    ("value", pa.float64()),
    ("n", pa.int32()),  # samples of this problem
    ("c", pa.int32()),  # of which passed
])

EVAL_SUMMARY = pa.schema([
    ("cell", pa.string()),  # the cell's folder, relative to the eval directory
    ("checkpoint", pa.string()),  # the evaluated model folder / checkpoint URI
    ("checkpoint_fingerprint", pa.string()),  # content hash of its weights and config (the cache key's part)
    ("step", pa.int32()),  # updates done (a run's step_NNNN checkpoint is step NNNN + 1; the base model is 0;
    #                        -1 for a model that is not part of a run)
    ("benchmark", pa.string()),
    ("column", pa.string()),
    ("sampling", pa.string()),  # "greedy", e.g. "t0.6-n8", or for a samples file e.g. "samples-file-n3-5"
    ("temperature", pa.float64()),  # null for a samples file (not known)
    ("samples", pa.int32()),  # samples per problem (a samples file's fewest)
    ("metric", pa.string()),
    ("value", pa.float64()),  # mean over problems
    ("num_problems", pa.int32()),
])

_STANDALONE_VERDICT = [
    ("passed", pa.bool_()),
    ("status", pa.string()),  # mel.verify.types.STATUSES
    ("detail", pa.string()),
    ("tests_passed", pa.int64()),
    ("tests_total", pa.int64()),
    pa.field("seconds", pa.float64(), metadata=TIMING),
]

VERIFY_CODE = pa.schema([
    ("line", pa.int64()),  # 1-based line of the input row
    ("format", pa.string()),  # "mbpp", "humaneval" or "evalplus" (told by the row's fields)
    *_STANDALONE_VERDICT,
])

VERIFY_MATH = pa.schema([
    ("line", pa.int64()),
    *_STANDALONE_VERDICT,
    ("extracted_answer", pa.string()),  # the final answer taken from the prediction (null if none)
])

SCHEMAS: dict[str, pa.Schema] = {
    "rollouts": ROLLOUTS, "verdicts": VERDICTS, "pairs": PAIRS, "experiences": EXPERIENCES,
    "meta_experiences": META_EXPERIENCES, "revisions": REVISIONS,
    "eval_generations": EVAL_GENERATIONS, "eval_results": EVAL_RESULTS, "eval_problems": EVAL_PROBLEMS,
    "eval_summary": EVAL_SUMMARY, "verify_code": VERIFY_CODE, "verify_math": VERIFY_MATH,
}
