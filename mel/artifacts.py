"""Artifact I/O through fsspec: data first, manifest last.

An artifact at URI ``u`` (a Parquet file or a checkpoint folder) counts as complete only once ``u + ".manifest.json"``
exists; data is written under a temporary name and renamed, and the manifest is written after the rename. A run
killed at any point therefore leaves either a complete artifact or one that is simply recomputed, never a half-read
file. The manifest also records what was written -- a table's byte count and sha256, a folder's file sizes -- and an
artifact whose data no longer matches it (truncated, overwritten, a file gone) does not count as complete: it is
reported on stderr and recomputed, and `read_table` refuses to read it. Works for local paths and any fsspec URL
(``memory://``, ``s3://``, ``gs://``...). A write that runs out of space raises `StorageFull`, naming the artifact.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_SUFFIX = ".manifest.json"


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


class CorruptArtifact(ValueError):
    """An artifact's data does not match what its manifest recorded when it was written."""


class StorageFull(OSError):
    """A write of an artifact ran out of space (a full device or a disk quota); ``filename`` is the artifact's URI,
    or the local folder that filled up."""


_FULL = {errno.ENOSPC: os.strerror(errno.ENOSPC), errno.EDQUOT: os.strerror(errno.EDQUOT)}  # Linux's texts
NEARLY_FULL_BYTES = 1 << 20


def out_of_space(exc: BaseException | None) -> OSError | None:
    """The error in ``exc``'s chain (itself, what it was raised from or while handling) that says a device is full
    or a quota exceeded: an ``OSError`` with ENOSPC / EDQUOT, or a library's error whose text says so (safetensors:
    "No space left on device (os error 28)"; torch's writer keeps Python's OSError as its ``__context__``)."""
    for link in error_chain(exc):
        if isinstance(link, OSError) and link.errno in _FULL:
            return link
        for code, text in _FULL.items():
            if text in str(link):
                return OSError(code, text)
    return None


def error_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling, and so on (each once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _storage_full(exc: Exception, uri: str, local_dir: str | Path | None = None) -> StorageFull | None:
    """``exc``, a failed write of ``uri``, as `StorageFull` if it ran out of space: its chain says so, or (an error
    that does not say why, e.g. torch.save to a path: "unexpected pos 4928 vs 4820") the local folder it was being
    written to has less than ``NEARLY_FULL_BYTES`` free at the moment of failure (check before any cleanup)."""
    full = out_of_space(exc)
    if full is None and local_dir is not None:
        try:
            if shutil.disk_usage(local_dir).free < NEARLY_FULL_BYTES:
                full = OSError(errno.ENOSPC, _FULL[errno.ENOSPC])
        except OSError:
            pass
    return None if full is None else StorageFull(full.errno, full.strerror, uri)


@contextlib.contextmanager
def _writing(uri: str, local_dir: str | Path | None = None) -> Iterator[None]:
    """A write of ``uri`` (to ``local_dir`` on this machine, where known) that runs out of space raises
    `StorageFull` (from the original error); any other error passes unchanged."""
    try:
        yield
    except StorageFull:
        raise
    except Exception as exc:
        full = _storage_full(exc, uri, local_dir)
        if full is None:
            raise
        raise full from exc


_intact: dict[tuple[str, str, int], bool] = {}  # (uri, manifest's sha256, data size) -> checked once per process


def _damage(uri: str, info: dict[str, Any]) -> str:
    """Why ``uri``'s data does not match its manifest ("" when it does, or when the manifest records nothing)."""
    fs, path = _fs(uri)
    if "sha256" in info:
        try:
            size = fs.size(path)
        except FileNotFoundError:
            return "its data file is missing"
        if size != info["bytes"]:
            return f"{size} bytes, the manifest recorded {info['bytes']}"
        key = (uri, info["sha256"], size)
        if key not in _intact:
            with fs.open(path, "rb") as f:
                _intact[key] = hashlib.sha256(f.read()).hexdigest() == info["sha256"]
        return "" if _intact[key] else "its sha256 differs from the manifest's"
    if "sizes" in info and not info.get("pruned"):
        for name, recorded in info["sizes"].items():
            if name == "optimizer.pt" and info.get("optimizer_dropped"):
                continue
            try:
                size = fs.size(f"{path.rstrip('/')}/{name}")
            except FileNotFoundError:
                return f"{name} is missing"
            if size != recorded:
                return f"{name} has {size} bytes, the manifest recorded {recorded}"
    return ""


def is_complete(uri: str) -> bool:
    """The manifest exists and the data still matches it; a damaged artifact is reported (stderr) and is not
    complete, so the stage that writes it runs again."""
    fs, path = _fs(uri + MANIFEST_SUFFIX)
    if not fs.exists(path):
        return False
    damage = _damage(uri, read_manifest(uri))
    if damage:
        print(f"mel: {uri} is damaged ({damage}); it is not used, and is written again", file=sys.stderr)
        return False
    return True


def read_manifest(uri: str) -> dict[str, Any]:
    with fsspec.open(uri + MANIFEST_SUFFIX, "rt") as f:
        return json.load(f)


def write_manifest(uri: str, **info: Any) -> None:
    fs, path = _fs(uri + MANIFEST_SUFFIX)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with _writing(uri + MANIFEST_SUFFIX):
        with fs.open(tmp, "wt") as f:
            json.dump({"uri": uri, "written_at": time.time(), **info}, f, indent=1)
        fs.mv(tmp, path)


def annotate_manifest(uri: str, **info: Any) -> None:
    """Add keys to a complete artifact's manifest (atomically; its ``written_at`` and data checks unchanged)."""
    recorded = read_manifest(uri)
    recorded.pop("uri", None)
    write_manifest(uri, **{**recorded, **info})


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def list_names(uri: str) -> list[str]:
    """The names directly under the folder ``uri`` (sorted; empty if it does not exist)."""
    fs, path = _fs(uri)
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def remove(uri: str) -> None:
    """Delete an artifact: manifest first (so it stops counting as complete), then its data."""
    for target in (uri + MANIFEST_SUFFIX, uri):
        fs, path = _fs(target)
        if fs.exists(path):
            fs.rm(path, recursive=True)


TIMING_KEY = "mel.timing"
TIMING = {TIMING_KEY: "wall-clock seconds: left out of the content fingerprint"}
"""Field metadata of a column that measures time (a verdict's ``seconds``): two writes of the same content differ
there, so `content_fingerprint` leaves it out."""


def content_fingerprint(table: pa.Table, schema: pa.Schema) -> str:
    """sha256 of ``table``'s columns but those ``schema`` marks `TIMING`: what a reader of the artifact learns from
    it, so that an artifact written again with the same content (a damaged file recomputed) has the same one."""
    keep = [f.name for f in schema if not (f.metadata and TIMING_KEY.encode() in f.metadata)]
    data = table.select(keep).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([pa.field(f.name, f.type) for f in data.schema])) as writer:
        writer.write_table(pa.Table.from_arrays(data.columns, names=keep))
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def relative_to(uri: str, base: str) -> str:
    """``uri`` relative to the folder ``base`` when inside it (a run directory moved or copied still resolves)."""
    prefix = base.rstrip("/") + "/"
    return uri[len(prefix):] if uri.startswith(prefix) else uri


def resolve(ref: str, base: str) -> str:
    """The inverse of `relative_to`."""
    return ref if "://" in ref or ref.startswith("/") else join(base, ref)


def content_id(uri: str) -> str:
    """What identifies a complete artifact's content, from its manifest: a table's `content_fingerprint` (before that
    was recorded: its file's sha256), a folder's write (`write_folder`: a checkpoint written again counts as new), a
    resident checkpoint's state fingerprint, else when the manifest was written; "no manifest" for the base model's
    folder (where it lives differs from machine to machine; what it is, the config says)."""
    if not is_complete(uri):  # the base model: a folder without a manifest, fixed by the run's config (its hash)
        return "no manifest"
    info = read_manifest(uri)
    for key in ("content", "sha256", "fingerprint"):
        if info.get(key):
            return info[key] if isinstance(info[key], str) else json.dumps(info[key], sort_keys=True)
    return f"written_at:{info.get('written_at')}"


def write_table(uri: str, table: pa.Table, schema: pa.Schema, **manifest_info: Any) -> str:
    """Write ``table`` (cast to ``schema``, which must match its columns exactly) then its manifest, which records
    its `content_fingerprint` (``content``)."""
    if table.schema.names != schema.names:
        raise ValueError(f"{uri}: columns {table.schema.names} do not match the schema's {schema.names}")
    table = table.cast(schema)
    fs, path = _fs(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    _remove_leftovers(uri)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    with _writing(uri):
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    digest = hashlib.sha256(data).hexdigest()
    write_manifest(uri, rows=table.num_rows, columns=schema.names, bytes=len(data), sha256=digest,
                   content=content_fingerprint(table, schema), **manifest_info)
    # what this process just wrote is intact: a damaged file seen earlier had the same sha256 and size in its
    # manifest when it is written again with the same bytes (a deterministic stage), and must not stay "damaged"
    _intact[(uri, digest, len(data))] = True
    return uri


def _remove_leftovers(uri: str) -> None:
    """Remove the temporary files or folders an earlier, killed write of ``uri`` left beside it (``NAME.tmp-*``; a
    checkpoint's can be GBs; on object storage, an object a killed ``mv`` copied and did not delete). An artifact has
    one writer at a time (its stage), so any such sibling is dead."""
    if not is_local(uri):
        fs, path = _fs(uri)
        for stale in fs.glob(path + ".tmp-*"):
            fs.rm(stale, recursive=True)
        return
    final = Path(local_path(uri))
    for stale in final.parent.glob(final.name + ".tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_rows(uri: str, rows: list[dict[str, Any]], schema: pa.Schema, **manifest_info: Any) -> str:
    return write_table(uri, pa.Table.from_pylist(rows, schema=schema), schema, **manifest_info)


def read_table(uri: str, schema: pa.Schema | None = None) -> pa.Table:
    if not is_complete(uri):
        raise FileNotFoundError(f"{uri} is not a complete artifact (no manifest)")
    # Parquet goes through memory, not through pyarrow reading a Python file object: that path leaves pyarrow I/O
    # threads that abort the interpreter at exit now and then ("terminate called without an active exception"), and
    # so does its decoding thread pool: these small tables are decoded on the calling thread.
    with fsspec.open(uri, "rb") as f:
        data = f.read()
    recorded = read_manifest(uri).get("sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise CorruptArtifact(f"{uri}: its data changed since it was written (sha256 differs from its manifest's)")
    table = pq.read_table(pa.BufferReader(data), use_threads=False)
    if schema is not None and table.schema.names != schema.names:
        raise ValueError(f"{uri}: columns {table.schema.names} do not match the schema's {schema.names}")
    return table


def write_folder(uri: str, build: Callable[[Path], None], **manifest_info: Any) -> str:
    """Publish a folder (e.g. a checkpoint): ``build(tmp_dir)`` fills a temporary folder, which is renamed (local)
    or uploaded (remote) to ``uri``; the manifest is written last. Running out of space raises `StorageFull`: naming
    ``uri``, or for a remote ``uri`` the local staging folder, where that is what filled up."""
    fs, path = _fs(uri)
    if is_local(uri):
        final = Path(local_path(uri))
        with _writing(uri):
            final.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(uri)
            tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            with _writing(uri, tmp):  # inside: a full device is seen before the cleanup frees it
                build(tmp)
                files = sorted(p.name for p in tmp.iterdir())
                sizes = _sizes(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        with tempfile.TemporaryDirectory() as tmp_dir:
            with _writing(tmp_dir, tmp_dir):
                build(Path(tmp_dir))
            files = sorted(p.name for p in Path(tmp_dir).iterdir())
            sizes = _sizes(Path(tmp_dir))
            with _writing(uri):
                if fs.exists(path):
                    fs.rm(path, recursive=True)
                fs.put(tmp_dir.rstrip("/") + "/", path, recursive=True)
    # a folder's content is named by its write (hashing GBs of weights is not worth it): kept when the manifest is
    # rewritten (a pruned checkpoint, its optimizer state dropped), new when the folder is written again
    write_manifest(uri, files=files, sizes=sizes, content=f"write:{uuid.uuid4().hex}", **manifest_info)
    return uri


def _sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def fetch_folder(uri: str, cache_dir: str | Path | None = None) -> str:
    """A local path for a folder artifact (the path itself when local; else a downloaded copy). The copy is kept per
    version of the artifact (its manifest's content), so a folder written again at the same URI (a damaged checkpoint
    recomputed, a new run in a reused run directory) is downloaded again, never served from an older copy."""
    if is_local(uri):
        return local_path(uri)
    version = "unversioned"
    if exists(uri + MANIFEST_SUFFIX):
        with fsspec.open(uri + MANIFEST_SUFFIX, "rb") as f:
            version = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = Path(cache_dir or tempfile.gettempdir()) / "mel-fetch" / uri.replace("://", "/").strip("/") / version
    if not (cache / ".fetched").exists():
        fs, path = _fs(uri)
        cache.mkdir(parents=True, exist_ok=True)
        fs.get(path.rstrip("/") + "/", str(cache), recursive=True)
        (cache / ".fetched").touch()
    return str(cache)
