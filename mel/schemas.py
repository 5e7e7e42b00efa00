"""Every Parquet artifact's schema, in one place. A stage writes exactly these columns, in this order.

rollouts (``step_NNNN/rollouts.parquet``): one row per sample.
    step, prompt_index (0..B-1 within the step), sample_index (0..G-1), problem_id, problem_json (the ``Problem``),
    prompt_text (the user turn), prompt_token_ids (chat-formatted prompt), completion_text, completion_token_ids,
    completion_logprobs (log-probs of the sampled tokens under the sampling distribution), finish_reason
    ("stop" | "length"), num_completion_tokens.
verdicts (``step_NNNN/verdicts.parquet``): one row per sample, same order as rollouts.
    step, prompt_index, sample_index, problem_id, passed, status (``mel.verify.types.STATUSES``), detail, reward,
    tests_passed, tests_total, seconds.
update metrics (``step_NNNN/update.parquet``) and the run's ``metrics.parquet``: one row per step (``METRICS``).
"""
from __future__ import annotations

import pyarrow as pa

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
    ("seconds", pa.float32()),
])

METRICS = pa.schema([
    ("step", pa.int32()),
    ("reward_mean", pa.float64()),  # mean reward over the step's samples
    ("reward_std", pa.float64()),
    ("pass_rate", pa.float64()),  # share of samples that passed
    ("prompt_pass_rate", pa.float64()),  # share of prompts with at least one passing sample
    ("mixed_group_rate", pa.float64()),  # share of groups with both passing and failing samples
    ("all_negative_rate", pa.float64()),  # share of groups where every sample failed
    ("loss", pa.float64()),  # total loss (policy + kl_coef * kl), mean over optimizer steps
    ("pg_loss", pa.float64()),  # clipped policy-gradient term
    ("kl", pa.float64()),  # k3 KL to the reference policy (0 when kl_coef = 0)
    ("clip_frac", pa.float64()),  # share of completion tokens where the ratio was clipped
    ("grad_norm", pa.float64()),  # global grad norm before clipping, mean over optimizer steps
    ("entropy", pa.float64()),  # mean token entropy of the policy on the sampled completions
    ("lr", pa.float64()),
    ("num_samples", pa.int32()),
    ("completion_tokens", pa.int64()),  # tokens generated this step
    ("mean_completion_tokens", pa.float64()),
    ("gen_tokens_per_s", pa.float64()),  # generation throughput
    ("train_tokens_per_s", pa.float64()),  # prompt+completion tokens through forward/backward per second
    ("rollout_s", pa.float64()),
    ("verify_s", pa.float64()),
    ("update_s", pa.float64()),
])

SCHEMAS: dict[str, pa.Schema] = {"rollouts": ROLLOUTS, "verdicts": VERDICTS, "metrics": METRICS}
