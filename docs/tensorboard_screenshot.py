"""The README's TensorBoard screenshot: a tiny run with ``run.loggers=[tensorboard]``, then ``tensorboard --logdir``
on its folder and headless Chromium on TensorBoard's scalars.

    python docs/tensorboard_screenshot.py          # writes docs/tensorboard-scalars.png (needs: apt install chromium)

About 5 minutes on 2 shared cores the first time (the tiny config, 6 steps, in runs/tb-screenshot/tiny); again, the
complete run is reused and only the screenshot is taken.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "tensorboard-scalars.png"
BIN = Path(sys.executable).parent
STEPS = 6


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("tensorboard_screenshot: needs Chromium (apt install chromium)")
    runs = REPO / "runs" / "tb-screenshot"
    subprocess.run([BIN / "mel", "run", "configs/tiny.yaml", "--run-dir", str(runs / "tiny"),
                    "--set", f"run.steps={STEPS}", "--set", "run.loggers=[tensorboard]"], cwd=REPO, check=True)
    port = 6123
    board = subprocess.Popen([BIN / "tensorboard", "--logdir", str(runs), "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/data/runs", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        # the Scalars dashboard, unsmoothed, filtered to the curves that tell most at a glance
        page = (f"{url}/#scalars&_smoothingWeight=0&_ignoreYOutliers=false"
                "&tagFilter=%5E(reward_mean%7Cpass_rate%7Ckl%7Cgrad_norm%7Centropy%7Closs)%24")
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1500,1000", "--virtual-time-budget=30000", f"--screenshot={OUT}", page],
                       check=True, capture_output=True, timeout=180)
        print(f"wrote {OUT.relative_to(REPO)} ({page})")
    finally:
        os.killpg(board.pid, signal.SIGTERM)
        board.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
