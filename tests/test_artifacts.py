"""Artifact I/O: data first, manifest last, through fsspec (local and memory://)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from mel import artifacts, schemas

ROW = {"step": 0, "prompt_index": 1, "sample_index": 2, "problem_id": "easy/add", "passed": True,
       "status": "passed", "detail": "", "reward": 1.0, "tests_passed": 3, "tests_total": 3, "seconds": 0.1}


@pytest.mark.parametrize("base", ["LOCAL", "memory://mel-test"])
def test_table_round_trip_and_manifest(tmp_path, base):
    base = str(tmp_path) if base == "LOCAL" else base
    uri = artifacts.join(base, "step_0000", "verdicts.parquet")
    assert not artifacts.is_complete(uri)
    artifacts.write_rows(uri, [ROW], schemas.VERDICTS, seconds=1.5)
    assert artifacts.is_complete(uri)
    assert artifacts.read_table(uri, schemas.VERDICTS).to_pylist() == [{**ROW, "seconds": pytest.approx(0.1)}]
    assert artifacts.read_manifest(uri)["rows"] == 1 and artifacts.read_manifest(uri)["seconds"] == 1.5
    artifacts.remove(uri)
    assert not artifacts.is_complete(uri)
    with pytest.raises(FileNotFoundError, match="not a complete artifact"):
        artifacts.read_table(uri)


def test_data_without_manifest_does_not_count(tmp_path):
    uri = str(tmp_path / "rollouts.parquet")
    (tmp_path / "rollouts.parquet").write_bytes(b"half a file")  # a crash before the manifest
    assert not artifacts.is_complete(uri)


def test_wrong_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="do not match the schema"):
        artifacts.write_table(str(tmp_path / "x.parquet"), pa.table({"step": [0]}), schemas.VERDICTS)


@pytest.mark.parametrize("base", ["LOCAL", "memory://mel-folder"])
def test_folder_publish_is_atomic(tmp_path, base):
    base = str(tmp_path) if base == "LOCAL" else base
    uri = artifacts.join(base, "checkpoint")

    def broken(d):
        (d / "weights").write_text("partial")
        raise RuntimeError("killed while saving")

    with pytest.raises(RuntimeError):
        artifacts.write_folder(uri, broken)
    assert not artifacts.is_complete(uri)
    artifacts.write_folder(uri, lambda d: (d / "config.json").write_text("{}"), step=3)
    assert artifacts.is_complete(uri) and artifacts.read_manifest(uri)["files"] == ["config.json"]
    local = artifacts.fetch_folder(uri, tmp_path / "cache")
    assert (tmp_path / "cache").exists() or base == str(tmp_path)
    assert open(f"{local}/config.json").read() == "{}"
    if base == str(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.manifest.json"]


def test_reading_an_artifact_leaves_a_clean_interpreter_exit(tmp_path):
    """pyarrow reading through a Python file object aborted ~1 exit in 7 here (rc 134); artifacts avoid that path."""
    import subprocess
    import sys

    uri = str(tmp_path / "verdicts.parquet")
    artifacts.write_rows(uri, [ROW] * 50, schemas.VERDICTS)
    code = f"from mel import artifacts, schemas; artifacts.read_table({uri!r}, schemas.VERDICTS)"
    codes = [subprocess.run([sys.executable, "-c", code], capture_output=True).returncode for _ in range(12)]
    assert codes == [0] * 12, codes


def test_a_damaged_table_is_not_complete_and_is_never_read(tmp_path, capsys):
    schema = pa.schema([("x", pa.int64())])
    uri = str(tmp_path / "t.parquet")
    artifacts.write_rows(uri, [{"x": i} for i in range(100)], schema)
    assert artifacts.is_complete(uri)
    data = bytearray((tmp_path / "t.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    artifacts._intact.clear()  # a new process
    assert not artifacts.is_complete(uri)
    assert "sha256 differs" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a complete artifact"):
        artifacts.read_table(uri)
    (tmp_path / "t.parquet").write_bytes(bytes(data[:50]))  # truncated
    assert not artifacts.is_complete(uri)
    assert "bytes, the manifest recorded" in capsys.readouterr().err
    artifacts.write_rows(uri, [{"x": 1}], schema)  # written again: complete
    assert artifacts.is_complete(uri) and artifacts.read_table(uri).num_rows == 1


def test_a_folder_with_a_truncated_or_missing_file_is_not_complete(tmp_path):
    uri = str(tmp_path / "ckpt")

    def build(d):
        (d / "model.safetensors").write_bytes(b"w" * 100)
        (d / "config.json").write_text("{}")

    artifacts.write_folder(uri, build)
    assert artifacts.is_complete(uri)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"w" * 10)
    assert not artifacts.is_complete(uri)
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    assert not artifacts.is_complete(uri)


def test_a_table_changed_after_its_check_is_refused_when_read(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    uri = str(tmp_path / "t.parquet")
    artifacts.write_rows(uri, [{"x": i} for i in range(100)], schema)
    assert artifacts.is_complete(uri)  # checked (and remembered) before the change
    data = bytearray((tmp_path / "t.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "t.parquet").write_bytes(bytes(data))
    with pytest.raises(artifacts.CorruptArtifact, match="sha256 differs"):
        artifacts.read_table(uri)


def test_a_killed_writes_leftovers_are_removed_by_the_next_write(tmp_path):
    """A write killed between its temporary file/folder and the rename leaves ``NAME.tmp-*``; the next write of the
    same artifact removes it (a checkpoint's leftover is as large as the model)."""
    import pyarrow as pa

    from mel import artifacts

    table_uri, folder_uri = str(tmp_path / "t.parquet"), str(tmp_path / "checkpoint")
    (tmp_path / "t.parquet.tmp-dead0001").write_bytes(b"half a table")
    (tmp_path / "checkpoint.tmp-dead0002").mkdir()
    (tmp_path / "checkpoint.tmp-dead0002" / "model.safetensors").write_bytes(b"half a model")
    (tmp_path / "other.parquet.tmp-live0003").write_bytes(b"another artifact's")
    schema = pa.schema([("x", pa.int64())])
    artifacts.write_rows(table_uri, [{"x": 1}], schema)
    artifacts.write_folder(folder_uri, lambda d: (d / "w.bin").write_bytes(b"w"))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint", "checkpoint.manifest.json", "other.parquet.tmp-live0003", "t.parquet",
                    "t.parquet.manifest.json"]
