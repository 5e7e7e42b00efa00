"""Run ``mel`` (``cli.main``) with tick points inside every stage, to count them or to SIGKILL the run at one.

    python tests/_kill_launcher.py count TICKS.json -- run CONFIG [mel run args]   # write each stage's tick points
    python tests/_kill_launcher.py kill STAGE@STEP N -- run CONFIG [...]           # SIGKILL at that stage's N-th tick

A *tick* is a point inside a stage's work, labelled by the stage and step running it (``rollout@0``). Within the
update stage, once the checkpoint folder starts being written the label becomes ``checkpoint@STEP`` (the checkpoint
write, up to the update's record). The ticks, in the order the work reaches them:

- before every forward pass of a causal LM (each decoding step of generation, each training micro-batch);
- before each single item of a verifier batch (the batch is verified one item at a time, same verdicts);
- before each group's ``draw_pairs`` (pair) and each pair's ``build_template`` (template extract);
- before a Parquet artifact's data is written and before any manifest is written (so between a file and its
  manifest, and between a stage's outputs);
- in the checkpoint write: after the weights, after the tokenizer, after the optimizer state (before the folder is
  renamed into place), then the manifest and metrics points above.

There is no tick after a stage's record manifest: a kill at any tick leaves that stage incomplete, so the rerun must
compute it again. ``kill`` prints the point to stderr, then SIGKILLs its process group (the test starts it in a new
session, so verifier workers die with it) -- no cleanup, no ``finally``, as in a machine losing power. The test
counts the ticks of its uninterrupted run in its own process (``install`` with a ``Ticks()``, then ``undo``).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable


class Ticks:
    """Counts the ticks of each stage; with a ``target`` ("stage@step") and ``at`` (1-based), kills at that one."""

    def __init__(self, target: str | None = None, at: int = 0) -> None:
        self.current: str | None = None  # "stage@step" while a stage computes
        self.seen: dict[str, list[str]] = {}  # label -> what each tick was, in order
        self.target, self.at = target, at

    def __call__(self, what: str) -> None:
        if self.current is None:
            return
        points = self.seen.setdefault(self.current, [])
        points.append(what)
        if self.current == self.target and len(points) == self.at:
            print(f"kill-launcher: SIGKILL at {self.current} tick {self.at}: {what}", file=sys.stderr, flush=True)
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def install(ticks: Ticks) -> Callable[[], None]:
    """Put the tick points in place (in this process); returns what takes them out again."""
    import pytest
    import torch
    import transformers

    import mel.experience.template as template
    import mel.stages.pair as pair_stage
    import mel.verify as verify
    import tasks.stage as stage_task
    from mel import artifacts
    from mel.registry import Registry

    patch = pytest.MonkeyPatch()
    run_stage = stage_task.run_stage

    def run_stage_ticked(stage, cfg, run_dir, step, inputs, upstream, **options):
        ticks.current = f"{stage.name}@{step}"
        try:
            return run_stage(stage, cfg, run_dir, step, inputs, upstream, **options)
        finally:
            ticks.current = None

    patch.setattr(stage_task, "run_stage", run_stage_ticked)

    def forward_tick(module, args):
        if type(module).__name__.endswith("ForCausalLM"):
            ticks("model forward")

    hook = torch.nn.modules.module.register_module_forward_pre_hook(forward_tick)

    def one_at_a_time(kind, batch_verifier):
        def verify_items(problems, completions, **options):
            if ticks.current is None:
                return batch_verifier(problems, completions, **options)
            out = []
            for i, (p, c) in enumerate(zip(problems, completions)):
                ticks(f"verify {kind} item {i + 1}/{len(problems)}")
                out += batch_verifier([p], [c], **options)
            return out
        return verify_items

    one_by_one = Registry("verifier")
    for kind in verify.VERIFIERS:
        one_by_one.register(kind)(one_at_a_time(kind, verify.VERIFIERS.get(kind)))
    patch.setattr(verify, "VERIFIERS", one_by_one)

    def before(owner, attr, what):
        fn = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            ticks(what(*args, **kwargs))
            return fn(*args, **kwargs)
        patch.setattr(owner, attr, wrapped)

    def after_in_checkpoint(owner, attr, what):
        fn = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            if ticks.current and ticks.current.startswith("checkpoint@"):
                ticks(what(*args, **kwargs))
            return result
        patch.setattr(owner, attr, wrapped)

    def name(uri):
        return str(uri).rstrip("/").rsplit("/", 1)[-1]

    before(pair_stage, "draw_pairs", lambda *a, **k: "draw_pairs of a group")
    before(template, "build_template", lambda *a, **k: "build_template of a pair")
    before(artifacts, "write_table", lambda uri, *a, **k: f"before {name(uri)}'s data")
    before(artifacts, "write_manifest", lambda uri, **k: f"before {name(uri)}'s manifest")

    write_folder = artifacts.write_folder

    def write_folder_ticked(uri, build, **info):
        if ticks.current and ticks.current.startswith("update@"):
            ticks.current = "checkpoint@" + ticks.current.split("@", 1)[1]
        return write_folder(uri, build, **info)

    patch.setattr(artifacts, "write_folder", write_folder_ticked)
    after_in_checkpoint(transformers.PreTrainedModel, "save_pretrained",
                        lambda *a, **k: "weights written, tokenizer not yet")
    after_in_checkpoint(transformers.PreTrainedTokenizerBase, "save_pretrained",
                        lambda *a, **k: "tokenizer written, optimizer not yet")
    after_in_checkpoint(torch, "save", lambda obj, f, *a, **k: "optimizer state written, folder not yet renamed"
                        if str(f).endswith("optimizer.pt") else "torch.save")

    def undo() -> None:
        hook.remove()
        patch.undo()

    return undo


def main(argv: list[str]) -> int:
    split = argv.index("--")
    mode, rest, mel_args = argv[0], argv[1:split], argv[split + 1:]
    ticks = Ticks(rest[0], int(rest[1])) if mode == "kill" else Ticks()
    from cli.main import main as mel
    from cli.preflight import quiet_environment

    quiet_environment(verbose=False)  # before install() imports Prefect, as `mel run` does
    install(ticks)

    rc = mel(mel_args)
    if mode == "count":
        Path(rest[0]).write_text(json.dumps(ticks.seen, indent=1))
    elif mode == "kill":
        print(f"kill-launcher: the run ended before {ticks.target} reached tick {ticks.at}", file=sys.stderr)
        return 3
    return rc


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository this file is in, first
    sys.exit(main(sys.argv[1:]))
