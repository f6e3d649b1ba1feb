"""Kill a run anywhere (SIGKILL: no clean-up code runs), run it again, and get the complete report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_TARGET, interruptible

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """\
name: kill
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 2}
  - {type: export}
  - {type: quantize, calibration: {samples: 64}}
  - {type: prune, input: train, ratio: 0.5}
  - {type: finetune, epochs: 2, distill: {}}
  - {type: export, name: export-pruned, variant: pruned}
  - {type: quantize, name: quantize-pruned, variant: pruned-int8, calibration: {samples: 64}}
targets: [tiny-ort]
"""

# Where to kill, in the order a run reaches them: a log line, or the moment report.json appears.
POINTS = [r"^train: 1/2", r"^export: ONNX matches", r"^quantize: ", r"^prune: ", r"^finetune: 1/2",
          r"^quantize-pruned: ", r"^tiny-ort: timing", "report.json"]  # fmt: skip


def run_until(folder: Path, point: str) -> bool:
    """Start the run and SIGKILL it at `point`; False when the run finished before reaching it."""
    args = [sys.executable, "-m", "compress", "run", "r.yaml", "-o", "out"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=folder, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    hit = threading.Event()

    def watch_log() -> None:
        for line in proc.stderr:
            if point != "report.json" and re.search(point, line):
                hit.set()
                return

    threading.Thread(target=watch_log, daemon=True).start()
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if hit.is_set() or (point == "report.json" and (folder / "out" / "report.json").exists()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.slow
def test_killed_anywhere_the_rerun_completes_the_report(tmp_path):
    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(RECIPE)
    killed = [point for point in POINTS if run_until(tmp_path, point)]
    assert len(killed) >= 6, f"the run was killed at only {killed}"
    done = subprocess.run([sys.executable, "-m", "compress", "run", "r.yaml", "-o", "out"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["fp32", "int8", "pruned", "pruned-int8"]
    assert all(v["latency"] and v["accuracy"] for v in report["variants"])
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert not [p.name for p in (out / "cache").iterdir() if p.name.startswith(".")], "orphans left"
    assert not [p.name for p in (out / "models").iterdir() if p.name.startswith(".")]
    assert report["cache"]["computed"] < 8, "finished stages were reused after the kills"


@pytest.mark.slow
def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "compress", "run", "r.yaml", "-o", "out"], cwd=tmp_path, env=env,
                            preexec_fn=interruptible,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    for line in proc.stderr:
        if line.startswith("train: 1/2"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    assert "interrupted; run the same command again to resume" in rest and "Traceback" not in rest
