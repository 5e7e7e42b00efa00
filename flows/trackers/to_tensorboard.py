"""TensorBoard: event files in ``<run dir>/tensorboard`` (``tensorboard --logdir runs`` shows every run there).

Scalars are the metrics rows (TensorBoard keeps them as float32); the config is the Text tab's ``config`` (YAML)
and the HParams tab's row; the plots are images and the before/after table a Markdown text, at the last step.
A resumed run writes a new event file in the same folder, starting with TensorBoard's purge marker at the first step
it logs (``purge_step``): events a crash left past the last recorded step are hidden, never shown twice."""
from __future__ import annotations

import struct
from typing import Any

from flows.trackers.common import TRACKERS, Scalar, Tracker, markdown_table
from mel.config import to_yaml
from mel.stages.table import METRICS


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    def open(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        folder = self.run.local_dir("tensorboard")
        last = self.record.get("last_step")
        self.writer = SummaryWriter(folder, purge_step=None if last is None else last + 1)
        if "started" not in self.record:  # a new run: its config, once
            self.writer.add_text("config", f"```yaml\n{to_yaml(self.run.cfg)}```")
            metric_names = {name: 0.0 for name in METRICS.names if name != "step"}
            for summary in hparams(self.run.hparams(), metric_names):
                # torch's stubs: file_writer is None (it is set once __init__ opens the writer)
                self.writer.file_writer.add_summary(summary)  # type: ignore[attr-defined]
            self.writer.flush()
        return {"dir": folder, "started": True}

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # on disk before the step counts as logged (trackers.json)

    def log_images(self, step: int, images: dict[str, str]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        for name, path in images.items():
            with open(path, "rb") as f:
                data = f.read()
            width, height = _png_size(data)
            image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
            summary = Summary(value=[Summary.Value(tag=f"plots/{name}", image=image)])
            self.writer.file_writer.add_summary(summary, step)  # type: ignore[attr-defined]  # as in open
        self.writer.flush()

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Scalar]]) -> None:
        self.writer.add_text(name, markdown_table(columns, rows), step)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()
