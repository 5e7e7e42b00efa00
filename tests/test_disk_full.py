"""A run directory that fills up: the write that ran out of space raises `mel.artifacts.StorageFull` naming what it
was writing (torch's checkpoint writer says only "unexpected pos 4928 vs 4820"), and ``mel run`` ends with one line
naming the run directory and the cause (exit 1), no traceback; after space is freed the same command resumes.

The device is a real small tmpfs, mounted in a mount namespace of the test's own (``unshare --user --map-root-user
--mount``, else bubblewrap's ``--size``/``--tmpfs``; skipped, saying why, where neither can mount one). The space
runs out for real: a ballast file fills the tmpfs, and is deleted to free it. CI runs the real writers (torch.save,
safetensors, Parquet) on a full tmpfs and the one-line message's tests; the ``mel run`` cases are marked e2e and
slow (the CI budget): a small one-step run that fills up inside its checkpoint, and the issue's scenario (the tiny
config, 2 steps, full while writing step 2's checkpoint).
"""
from __future__ import annotations

import errno
import logging
import os
import shlex
import subprocess
import sys

import pytest

from cli.run_failures import _HideSaidErrors, no_space_line
from mel import artifacts
from mel.checkpoints import ReplayMismatch
from conftest import REPO
from small_run import SMALL, progress

CHECKPOINT_MB = 43  # the tiny model's checkpoint: weights 12.9 MB, tokenizer 3.5 MB, AdamW moments 25.8 MB


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
])
def test_out_of_space_is_read_from_the_error(exc) -> None:
    assert artifacts.out_of_space(exc).errno in (errno.ENOSPC, errno.EDQUOT)
    assert artifacts.out_of_space(ValueError("a bad row")) is None


def test_out_of_space_is_read_from_the_chain() -> None:
    try:  # torch.save to a file object: its writer's RuntimeError, raised while handling Python's OSError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            # no `from` (B904): the implicit chain (__context__) is what torch raises and what this test reads
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
    except RuntimeError as exc:
        assert artifacts.out_of_space(exc).errno == errno.ENOSPC


@pytest.mark.parametrize("free", [0, 10 << 30])
def test_a_folder_write_that_says_nothing_is_out_of_space_when_the_device_is_full(tmp_path, monkeypatch, free):
    """torch.save to a path fails with no errno; whether the device was full is read before the cleanup frees it."""
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(free + 1, 1, free))

    def build(d):
        (d / "model.safetensors").write_bytes(b"w")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4928 vs 4820")

    uri = str(tmp_path / "step_0001" / "checkpoint")
    with pytest.raises(artifacts.StorageFull if free == 0 else RuntimeError) as raised:
        artifacts.write_folder(uri, build)
    if free == 0:
        assert raised.value.filename == uri and raised.value.errno == errno.ENOSPC
        assert "unexpected pos" in str(raised.value.__cause__)
    assert os.listdir(tmp_path / "step_0001") == []  # no temporary folder, no manifest


def test_prefect_console_records_of_that_failure_are_hidden() -> None:
    full = artifacts.StorageFull(errno.ENOSPC, "No space left on device", "/r/step_0001/checkpoint")
    hide = _HideSaidErrors()

    def record(msg, exc=None, level=logging.ERROR):
        return logging.LogRecord("prefect.task_runs", level, __file__, 1, msg, None,
                                 (type(exc), exc, None) if exc else None)

    assert not hide.filter(record("Task run failed with exception: StorageFull(28, ...)", full))
    assert not hide.filter(record(f"Finished in state Failed('Task run encountered an exception StorageFull: {full}')"))
    assert hide.filter(record("Task run failed with exception: ValueError('x')", ValueError("x")))
    mismatch = ReplayMismatch("step 4: its update, replayed ...")
    assert not hide.filter(record("Task run failed with exception: ReplayMismatch('step 4: ...')", mismatch))
    assert not hide.filter(record("Finished in state Failed('Task run encountered an exception ReplayMismatch: ...')"))
    assert no_space_line(full, "/r") == (
        "mel run: out of space in the run directory /r (writing /r/step_0001/checkpoint: No space left on device); the "
        "run stopped. Nothing finished is lost: free space there and run the same command again to resume")


@pytest.fixture(scope="module")
def in_tmpfs(tmp_path_factory):
    """``in_tmpfs(size_mb, script, env)``: run the shell ``script`` with a new tmpfs of ``size_mb`` MiB mounted at
    ``$MEL_TMPFS`` (a folder of its own), in a mount namespace of its own; its CompletedProcess and that folder."""
    def argv(size_mb: int, where, script: str, tool: str) -> list[str]:
        if tool == "unshare":
            return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                    f"mount -t tmpfs -o size={size_mb}M tmpfs {shlex.quote(str(where))} && {script}"]
        return ["bwrap", "--dev-bind", "/", "/", "--size", str(size_mb << 20), "--tmpfs", str(where),
                "sh", "-c", script]

    why = []
    for tool in ("unshare", "bwrap"):
        probe = tmp_path_factory.mktemp("probe")
        try:
            proc = subprocess.run(argv(1, probe, f"test $(stat -f -c %T {probe}) = tmpfs", tool), capture_output=True,
                                  text=True, timeout=30)
        except FileNotFoundError as exc:
            why.append(str(exc))
            continue
        if proc.returncode == 0:
            break
        why.append(f"{tool}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    else:
        pytest.skip("cannot mount a small tmpfs here (neither unprivileged user and mount namespaces nor bubblewrap): "
                    + "; ".join(why))

    def run(size_mb: int, script: str, env: dict[str, str] | None = None, timeout: int = 600):
        where = tmp_path_factory.mktemp("tmpfs")
        proc = subprocess.run(argv(size_mb, where, script, tool), cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env={**(env or os.environ), "MEL_TMPFS": str(where)})
        return proc, where

    return run


WRITERS = """
import os, sys, pyarrow as pa, torch, safetensors.torch
from mel import artifacts
root = os.environ["MEL_TMPFS"]
big = {"w": torch.rand(2_000_000)}  # 8 MB, on a 4 MiB device
def attempt(name, write):
    try:
        write()
        print(f"{name}: wrote")
    except artifacts.StorageFull as exc:
        print(f"{name}: StorageFull {exc.filename}")
    except Exception as exc:
        print(f"{name}: {type(exc).__name__} {exc}")
attempt("torch.save", lambda: artifacts.write_folder(root + "/a", lambda d: torch.save(big, d / "optimizer.pt")))
attempt("safetensors", lambda: artifacts.write_folder(root + "/b", lambda d: safetensors.torch.save_file(big, d / "m")))
attempt("parquet", lambda: artifacts.write_rows(root + "/c.parquet", [{"x": os.urandom(1024)} for _ in range(8000)],
                                                pa.schema([("x", pa.binary())])))
"""


def test_real_writers_on_a_full_device_raise_storage_full(in_tmpfs) -> None:
    proc, where = in_tmpfs(4, f"exec {shlex.quote(sys.executable)} -c {shlex.quote(WRITERS)}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"torch.save: StorageFull {where}/a", f"safetensors: StorageFull {where}/b",
                                        f"parquet: StorageFull {where}/c.parquet"], proc.stdout + proc.stderr


def _mel_run_filled_then_freed(in_tmpfs, prefect_env: dict[str, str], args: list[str], size_mb: int,
                               ballast_mb: int) -> tuple[str, str, str]:
    """``mel run ARGS --run-dir $MEL_TMPFS/run`` on a tmpfs of ``size_mb`` MiB that a ballast file of ``ballast_mb``
    fills; then the ballast deleted and the same command again. Each run's stdout and stderr, and the run dir."""
    mel = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "cli", *args, "--run-dir"]) + ' "$MEL_TMPFS/run"'
    script = (f'head -c {ballast_mb << 20} /dev/zero > "$MEL_TMPFS/ballast" && {mel}; echo "exit $?" >&2; '
              f'echo "=== freed" >&2; echo "=== freed"; rm "$MEL_TMPFS/ballast" && {mel}')
    proc, where = in_tmpfs(size_mb, script, env=prefect_env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out, out_again), (err, err_again) = proc.stdout.split("=== freed\n"), proc.stderr.split("=== freed\n")
    run_dir = f"{where}/run"
    assert "exit 1" in err and "Traceback" not in err + out, err
    line = f"mel run: out of space in the run directory {run_dir} (writing {run_dir}/"
    assert [x for x in err.splitlines() if x.startswith("mel run:")] == [err.splitlines()[-2]], err
    assert err.splitlines()[-2].startswith(line) and "No space left on device" in err.splitlines()[-2], err
    assert "Traceback" not in err_again, err_again
    return out, out_again, err.splitlines()[-2]


@pytest.fixture
def prefect_env(prefect_harness, tmp_path) -> dict[str, str]:
    """The environment of a ``mel run`` subprocess: this session's Prefect test server (no server of its own)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect")}


@pytest.mark.e2e
@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores); CI runs the writers on a full tmpfs
def test_a_run_directory_full_inside_the_checkpoint_ends_with_one_line_then_resumes(in_tmpfs, prefect_env):
    """One step of the small run on 64 MiB, 34 of them ballast: the checkpoint's weights fit, its optimizer state
    (torch.save) does not."""
    out, again, line = _mel_run_filled_then_freed(in_tmpfs, prefect_env, ["run", "configs/tiny.yaml", *SMALL,
                                                  "--set", "run.steps=1"], size_mb=64, ballast_mb=64 - 30)
    assert "step_0000/checkpoint" in line, line
    assert progress(out) == [("1", "rollout", "done"), ("1", "verify", "done")], out
    assert progress(again) == [("1", "rollout", "reused"), ("1", "verify", "reused"), ("1", "update", "done")], again


@pytest.mark.e2e
@pytest.mark.slow
def test_the_issue_scenario_full_while_writing_step_2s_checkpoint(in_tmpfs, prefect_env):
    """The tiny config, 2 steps, on a device where step 1 fits and step 2's checkpoint does not."""
    out, again, line = _mel_run_filled_then_freed(in_tmpfs, prefect_env, ["run", "configs/tiny.yaml", "--set",
                                                  "run.steps=2"], size_mb=64 + CHECKPOINT_MB, ballast_mb=64 - 20)
    assert "step_0001/checkpoint" in line, line
    assert [how for _, _, how in progress(out)] == ["done"] * 5, out
    assert [how for _, _, how in progress(again)] == ["reused"] * 5 + ["done"], again
