"""The step's policy, on both sides: the engine that generates with it and the trainer state (model, tokenizer,
optimizer) that the update trains. Both stay resident in the process that runs the policy stages (the flow's, or the
run's Ray policy worker) and are keyed by the checkpoint whose content they hold.

A step's ``checkpoint`` artifact is either **written** (a model folder with the optimizer state) or, with
``run.checkpoint_every = k``, on the steps between two written ones, **resident**: a manifest only, marked
``resident``, that names its parent checkpoint, the cached artifacts its update trained on and the fingerprint of the
state it produced (`mel.fingerprint`). The state itself is in memory. A process that lost it (a killed run, a
restarted Ray actor) gets it back by **replay** (``trainer_state``): load the newest written ancestor, run each
resident step's update again on its cached rollouts, verdicts and meta-experiences (nothing is generated again), and
check each result against the recorded fingerprint: on the CPU a difference is an error naming the step
(``ReplayMismatch``: a cached artifact changed, the run is not what it was); on a GPU, whose kernels are not
bit-reproducible, the relative difference of the per-tensor norms is reported and the run goes on.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mel import artifacts, schemas
from mel.checkpoints import ReplayMismatch
from mel.config import Config
from mel.engines.base import ENGINE_CACHE, LazyEngine, engine_capabilities, format_chat
from mel.fingerprint import Fingerprint, fingerprint
from mel.stages.common import derive_seed
from mel.stages.step import NOTES

if TYPE_CHECKING:  # torch: imported where a stage trains, not by every importer of this module
    from mel.update import UpdateResult

__all__ = ["policy_engine", "engine_key", "TrainerState", "TRAINER", "trainer_state", "train_on",
           "is_resident", "writes_checkpoint", "weights_folder", "ReplayMismatch", "UpdateInputs"]


def writes_checkpoint(cfg: Config, step: int) -> bool:
    """Whether step ``step`` (0-based) writes its checkpoint: every ``run.checkpoint_every``-th step and the last."""
    return (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 >= cfg.run.steps


def is_resident(uri: str) -> bool:
    """A complete step checkpoint whose state was kept in memory, not written (see the module docstring)."""
    return artifacts.is_complete(uri) and bool(artifacts.read_manifest(uri).get("resident"))


def weights_folder(uri: str) -> str:
    """The newest checkpoint at or before ``uri`` that has its files (the model folder a resident one descends
    from: its tokenizer and architecture are the same)."""
    return _lineage(uri)[1]


def _lineage(uri: str) -> tuple[list[str], str]:
    """The resident checkpoints from ``uri`` back (newest first), and the written one they descend from."""
    chain = []
    while is_resident(uri):
        chain.append(uri)
        uri = ResidentRecord.read(uri).parent
    return chain, uri


def _run_dir(checkpoint_uri: str) -> str:
    return checkpoint_uri.rstrip("/").rsplit("/", 2)[0]  # RUN/step_NNNN/checkpoint


@dataclass(frozen=True)
class ResidentRecord:
    """What a resident checkpoint's manifest holds (URIs resolved against its run directory)."""

    step: int
    parent: str  # the checkpoint the update started from
    inputs: "UpdateInputs"  # the cached artifacts it trained on
    fingerprint: Fingerprint  # of the state it produced

    def manifest(self, uri: str) -> dict:
        run_dir = _run_dir(uri)
        return {"step": self.step, "resident": True, "parent": artifacts.relative_to(self.parent, run_dir),
                "update_inputs": {k: v and artifacts.relative_to(v, run_dir)
                                  for k, v in self.inputs.to_record().items()},
                "fingerprint": self.fingerprint.to_record()}

    @classmethod
    def read(cls, uri: str) -> "ResidentRecord":
        info, run_dir = artifacts.read_manifest(uri), _run_dir(uri)
        inputs = UpdateInputs(**{k: v and artifacts.resolve(v, run_dir) for k, v in info["update_inputs"].items()})
        return cls(step=int(info["step"]), parent=artifacts.resolve(info["parent"], run_dir), inputs=inputs,
                   fingerprint=Fingerprint.from_record(info["fingerprint"]))


# --- the engine -------------------------------------------------------------------------------------------------

def engine_key(cfg: Config, checkpoint_uri: str) -> tuple:
    """What `ENGINE_CACHE` knows an engine by: the engine's settings and the checkpoint's URI and content (its
    manifest's write time, or for the base model folder its files' names, sizes and times)."""
    return (cfg.rollout.engine, *state_key(checkpoint_uri), cfg.rollout.engine_dtype(cfg.model.dtype), cfg.model.device,
            tuple(sorted(cfg.rollout.engine_options().items())))


def state_key(uri: str) -> tuple:
    content = artifacts.read_manifest(uri).get("written_at") if artifacts.is_complete(uri) else _folder_signature(uri)
    return (uri, content)


def _folder_signature(uri: str) -> tuple:
    """A model folder without a manifest (the base model): its files' names, sizes and modification times."""
    import os

    if not artifacts.is_local(uri):
        return (uri,)
    path = artifacts.local_path(uri)
    try:
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path)))
    except OSError:
        return (uri,)


def build_engine(cfg: Config, folder_uri: str, **model):
    """The run's engine on the model folder ``folder_uri`` (fetched when remote), or with ``model=, tokenizer=``
    (the transformers engine) on that model as it is in memory (the folder is then not read)."""
    from mel.engines import make_engine

    return make_engine(cfg.rollout.engine, folder_uri if model else artifacts.fetch_folder(folder_uri),
                       dtype=cfg.rollout.engine_dtype(cfg.model.dtype), device=cfg.model.device,
                       **cfg.rollout.engine_options(), **model)


def engine_on_state(cfg: Config, uri: str, state: "TrainerState"):
    """An engine holding ``state``'s weights: the transformers engine generates with the trainer's model itself;
    an engine that takes weights in memory (vLLM) is built on the newest written ancestor's folder and given them.
    ``state`` stays resident as the trainer state of ``uri``."""
    TRAINER.put(state_key(uri), state)
    if engine_capabilities(cfg.rollout.engine).model_in_memory:  # the transformers engine
        return build_engine(cfg, weights_folder(uri), model=state.model, tokenizer=state.tokenizer)
    engine = build_engine(cfg, weights_folder(uri))
    if not engine.capabilities.takes_weights:
        raise TypeError(f"rollout engine {cfg.rollout.engine!r} cannot take weights in memory: it needs "
                        "run.checkpoint_every = 1 (every step's weights written for it to load)")
    engine.load_weights(state.model.named_parameters())
    return engine


def policy_engine(cfg: Config, checkpoint_uri: str) -> LazyEngine:
    """The generation engine of ``rollout.engine`` on the checkpoint ``checkpoint_uri``, built on first use and
    shared by every stage of the step that asks for the same checkpoint (`mel.engines.base.ENGINE_CACHE`). A
    resident checkpoint's engine is built on its trainer state (held, or replayed)."""

    def make():
        from mel.checkpoints import require_weights

        if is_resident(checkpoint_uri):
            return engine_on_state(cfg, checkpoint_uri, trainer_state(cfg, checkpoint_uri))
        require_weights(checkpoint_uri)
        return build_engine(cfg, checkpoint_uri)

    key = engine_key(cfg, checkpoint_uri)
    return LazyEngine(lambda: ENGINE_CACHE.get(key, make))


# --- the trainer state ------------------------------------------------------------------------------------------

@dataclass
class TrainerState:
    """What the update trains and carries to the next step: the model, its tokenizer and the optimizer."""

    model: Any
    tokenizer: Any
    optimizer: Any


class TrainerSlot:
    """The one trainer state of this process, under the key of the checkpoint whose content it is."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._state: TrainerState | None = None
        self._lock = threading.Lock()

    def put(self, key: tuple, state: TrainerState) -> None:
        with self._lock:
            self._key, self._state = key, state

    def take(self, key: tuple) -> TrainerState | None:
        """The state held for ``key`` (forgotten here: the caller trains it); None, dropping what is held, if the
        slot holds another checkpoint's state or none."""
        with self._lock:
            state = self._state if self._key == key else None
            self._key, self._state = None, None
            return state

    def clear(self) -> None:
        with self._lock:
            self._key, self._state = None, None


TRAINER = TrainerSlot()


@dataclass(frozen=True)
class UpdateInputs:
    """The cached artifacts an update trains on (URIs; ``meta_experiences`` None without MEL)."""

    rollouts: str
    verdicts: str
    meta_experiences: str | None = None

    def to_record(self) -> dict:
        return {"rollouts": self.rollouts, "verdicts": self.verdicts, "meta_experiences": self.meta_experiences}


def load_state(cfg: Config, uri: str) -> TrainerState:
    """The trainer state in a written checkpoint (or the base model, with a fresh optimizer)."""
    from mel.checkpoints import require_weights
    from mel.models import load_model_and_tokenizer
    from mel.update import load_optimizer_state, make_optimizer

    require_weights(uri, optimizer=True)  # a step resumes from the newest checkpoint, never a pruned one
    folder = artifacts.fetch_folder(uri)
    model, tokenizer = load_model_and_tokenizer(folder, cfg.model.dtype, cfg.model.device)
    optimizer = make_optimizer(model, cfg.optimizer)
    load_optimizer_state(optimizer, folder)
    return TrainerState(model, tokenizer, optimizer)


def with_optimizer(cfg: Config, uri: str, model, tokenizer) -> TrainerState:
    """A trainer state around a model already loaded from the written checkpoint ``uri`` (the transformers engine's)."""
    from mel.update import load_optimizer_state, make_optimizer

    optimizer = make_optimizer(model, cfg.optimizer)
    load_optimizer_state(optimizer, artifacts.fetch_folder(uri))
    return TrainerState(model, tokenizer, optimizer)


def trainer_state(cfg: Config, uri: str) -> TrainerState:
    """The trainer state whose content is checkpoint ``uri``: held in memory, loaded from its folder, or for a
    resident checkpoint whose state this process does not hold, replayed (module docstring)."""
    state = TRAINER.take(state_key(uri))
    if state is not None:
        return state
    chain, written = _lineage(uri)
    state = load_state(cfg, written)
    for resident in reversed(chain):
        replay_update(cfg, resident, state)
    return state


def replay_update(cfg: Config, uri: str, state: TrainerState) -> None:
    """Recompute the update that produced the resident checkpoint ``uri`` on ``state`` (its parent's) and check it."""
    import time

    record = ResidentRecord.read(uri)
    step, inputs = record.step, [v for v in record.inputs.to_record().values() if v]
    t0 = time.perf_counter()
    missing = [v for v in inputs if not artifacts.is_complete(v)]
    if missing:
        raise ReplayMismatch(f"step {step + 1} kept its trained state in memory only (run.checkpoint_every) and the "
                             f"cached artifacts to rebuild it are gone or damaged: {', '.join(missing)}. Use a fresh "
                             "run directory.")
    train_on(cfg, step, state, record.inputs)
    now = fingerprint(state.model, state.optimizer)
    gap = record.fingerprint.difference(now)
    if record.fingerprint.exact and now.exact and gap:
        raise ReplayMismatch(
            f"step {step + 1}: its update, replayed from the cached artifacts ({', '.join(inputs)}), gives other "
            f"weights than the run recorded (weights {str(now.weights)[:12]}, recorded "
            f"{str(record.fingerprint.weights)[:12]}): a cached artifact changed since, so the run is not what it "
            "was. Use a fresh run directory, or restore the artifacts.")
    note = "identical to the recorded state" if not gap else f"largest relative norm difference {gap:.2g}"
    NOTES.append(f"[step {step + 1}] replayed the update from its cached artifacts in "
                 f"{time.perf_counter() - t0:.1f} s (nothing generated again): {note}")


def experience_batch(rows: list[dict], tokenizer, cfg: Config):
    """The selected meta-experiences as (C_retro, M) token ids: C_retro is the builder's retrospective context as a
    chat user turn (with the assistant header), M is its rendered text closed by the end-of-turn token."""
    from mel.update import ExperienceBatch

    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    context, target = [], []
    for r in rows:
        text = format_chat(tokenizer, r["retro_prompt"], cfg.rollout.use_chat_template, cfg.rollout.system_prompt)
        context.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        target.append(tokenizer(r["experience_text"], add_special_tokens=False)["input_ids"] + end)
    return ExperienceBatch(context_ids=context, target_ids=target)


def read_update_rows(inputs: UpdateInputs) -> tuple[list[dict], list[dict]]:
    """The step's rollouts and their verdicts, row for row (an error if they do not line up)."""
    rollout_rows = artifacts.read_table(inputs.rollouts, schemas.ROLLOUTS).to_pylist()
    verdict_rows = artifacts.read_table(inputs.verdicts, schemas.VERDICTS).to_pylist()
    if [(r["prompt_index"], r["sample_index"]) for r in rollout_rows] != [
        (v["prompt_index"], v["sample_index"]) for v in verdict_rows
    ]:
        raise ValueError(f"{inputs.verdicts} does not line up with {inputs.rollouts} "
                         "(prompt_index/sample_index differ)")
    return rollout_rows, verdict_rows


def train_on(cfg: Config, step: int, state: TrainerState, inputs: UpdateInputs,
             rows: tuple[list[dict], list[dict]] | None = None) -> UpdateResult:
    """Step ``step``'s policy update on ``state`` (in place) from its cached artifacts; `mel.update.policy_update`'s
    stats. Seeded by (run seed, step): the same inputs on the same state give the same result."""
    import torch

    from mel.models import load_model_and_tokenizer, resolve_model
    from mel.update import UpdateBatch, policy_update

    rollout_rows, verdict_rows = rows or read_update_rows(inputs)
    ref_model = None
    if cfg.algorithm.kl_coef > 0:
        ref_model, _ = load_model_and_tokenizer(resolve_model(cfg.model), cfg.model.dtype, cfg.model.device)
        ref_model.eval()
    batch = UpdateBatch(
        prompt_ids=[r["prompt_token_ids"] for r in rollout_rows],
        completion_ids=[r["completion_token_ids"] for r in rollout_rows],
        rewards=[v["reward"] for v in verdict_rows],
        group_ids=[r["prompt_index"] for r in rollout_rows],
        sampling_logprobs=[r["completion_logprobs"] for r in rollout_rows],
    )
    experiences = None
    if inputs.meta_experiences is not None:
        me_rows = artifacts.read_table(inputs.meta_experiences, schemas.META_EXPERIENCES).to_pylist()
        experiences = experience_batch([r for r in me_rows if r["selected"]], state.tokenizer, cfg)
    torch.manual_seed(derive_seed(cfg.run.seed, step, "update"))
    return policy_update(
        state.model, state.optimizer, batch, cfg.algorithm, cfg.optimizer,
        pad_id=state.tokenizer.pad_token_id, temperature=cfg.rollout.temperature,
        max_len=cfg.rollout.max_new_tokens, seed=derive_seed(cfg.run.seed, step, "minibatch"), ref_model=ref_model,
        experiences=experiences, nll_coef=cfg.mel.nll_coef, nll_coef_mode=cfg.mel.nll_coef_mode,
        nll_grad_ratio=cfg.mel.nll_grad_ratio,
    )

