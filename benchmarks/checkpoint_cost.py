"""What ``run.checkpoint_every = k`` saves per step: a written checkpoint (weights + AdamW state, what every step paid
before) against a resident step (the fingerprint it records instead, `mel.fingerprint`), measured side by side in one
process on the same trained state, and the bytes and seconds per step that follow for several k.

    python benchmarks/checkpoint_cost.py                          # the demo model (SmolLM2-135M-Instruct, fp32)
    python benchmarks/checkpoint_cost.py --config configs/tiny.yaml --repeats 1
    python benchmarks/checkpoint_cost.py --run-dir /some/disk     # where the checkpoints go (default: a temp dir)

Also prints the projection for a larger model from its parameter count (``--project-params 7.6e9``): weights in
``--weights-dtype-bytes`` (2: bf16) plus AdamW's two fp32 moments (and fp32 master weights with ``--master-fp32``), at
the write speed measured here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def trained_state(cfg):
    """The config's model with an optimizer that has stepped once (so its moments exist, as after any update)."""
    import torch

    from mel.models import load_model_and_tokenizer, resolve_model
    from mel.update import make_optimizer

    model, tokenizer = load_model_and_tokenizer(resolve_model(cfg.model), cfg.model.dtype, cfg.model.device)
    optimizer = make_optimizer(model, cfg.optimizer)
    ids = torch.tensor([tokenizer("def f(x): return x")["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return model, tokenizer, optimizer


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--run-dir", default=None, help="where checkpoints are written (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--project-params", type=float, default=7.6e9, help="parameters of the projected model")
    parser.add_argument("--weights-dtype-bytes", type=int, default=2, help="2: bf16 weights")
    parser.add_argument("--master-fp32", action="store_true", help="add fp32 master weights to the projection")
    args = parser.parse_args(argv)

    from mel.config import load_config
    from mel.fingerprint import fingerprint
    from mel.stages.common import set_threads
    from mel.update import save_checkpoint

    cfg = load_config(args.config)
    set_threads(cfg)
    model, tokenizer, optimizer = trained_state(cfg)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="ckpt-cost-"))
    writes, prints, size = [], [], 0
    for i in range(args.repeats):  # interleaved: the same load on both
        out = root / f"checkpoint-{i}"
        t0 = time.perf_counter()
        save_checkpoint(model, tokenizer, optimizer, out)
        os.sync()  # the bytes on disk, not in the page cache
        writes.append(time.perf_counter() - t0)
        size = folder_bytes(out)
        shutil.rmtree(out)
        t0 = time.perf_counter()
        fingerprint(model, optimizer)
        prints.append(time.perf_counter() - t0)
    if not args.run_dir:
        shutil.rmtree(root, ignore_errors=True)
    write_s, print_s = statistics.median(writes), statistics.median(prints)
    params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.model.source} ({params / 1e6:.0f}M parameters, {cfg.model.dtype}) on {os.cpu_count()} cores, "
          f"median of {args.repeats}:")
    print(f"  written checkpoint: {size / 1e9:.2f} GB in {write_s:.2f} s ({size / 1e9 / write_s:.2f} GB/s, synced)")
    print(f"  resident step:      0 bytes, fingerprint in {print_s:.2f} s "
          f"({write_s / print_s:.1f}x less time than a write)")
    print("\n  k   GB written/step   checkpoint s/step")
    for k in args.every:
        print(f"{k:3d}   {size / k / 1e9:15.2f}   {write_s / k + print_s * (k - 1) / k:17.2f}")
    per_param = args.weights_dtype_bytes + 8 + (4 if args.master_fp32 else 0)
    big = args.project_params * per_param
    print(f"\nprojection: {args.project_params / 1e9:.1f}B parameters x ({args.weights_dtype_bytes} B weights + 8 B "
          f"AdamW moments{' + 4 B fp32 master' if args.master_fp32 else ''}) = {big / 1e9:.0f} GB per checkpoint; "
          f"at {size / write_s / 1e9:.2f} GB/s {big / (size / write_s):.0f} s, at 2 GB/s {big / 2e9:.0f} s; "
          f"per step with k: {', '.join(f'k={k}: {big / k / 1e9:.0f} GB' for k in args.every)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
