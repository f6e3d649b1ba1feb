"""Epoch checkpoints: an interrupted training resumes mid-stage and ends with the same weights as
an uninterrupted run (the state is restored bit for bit on the same machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compress.artifact import Artifact, load_torch
from compress.data import load_data
from compress.models import build_model
from compress.recipe import ModelSpec, recipe_from_text
from compress.stages import training
from compress.stages.train import TrainStage
from tests.conftest import ROOT, TINY_TARGET
from tests.test_prune import stage_ctx

RECIPE = """\
name: resume
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 6, batch_size: 32, lr: 0.01}
  - {type: export}
targets: [tiny-ort]
"""


class Interrupted(Exception):
    pass


def digits(tmp_path: Path):
    spec = recipe_from_text(RECIPE.replace("targets: [tiny-ort]\n", "").replace("image_size: 16", "image_size: 8")).data
    return load_data(spec, tmp_path, 0)


def train(tmp_path: Path, splits, name: str, checkpoints: Path | None, schedule: str = "cosine",
          ) -> tuple[dict, list[dict], list[str]]:  # fmt: skip
    torch.manual_seed(0)  # the stage's input: the same initial weights every time
    model = build_model(ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 8)
    ctx = stage_ctx(tmp_path, splits, name)
    logs: list[str] = []
    ctx.log, ctx.show_progress, ctx.checkpoints = logs.append, False, checkpoints
    cfg = TrainStage(type="train", name="train", epochs=3, batch_size=32, lr=0.01, label_smoothing=0.1,
                     schedule=schedule)  # fmt: skip
    history = training.fit(model, cfg, ctx, "train")
    return model.state_dict(), history, logs


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])  # onecycle also fails if it steps past its end
def test_resumed_training_equals_an_uninterrupted_one(tmp_path, monkeypatch, schedule):
    splits = digits(tmp_path)
    want, want_history, _ = train(tmp_path, splits, "whole", None, schedule)
    checkpoints = tmp_path / "train-key.resume"
    epochs_run = []
    real_epoch = training.train_epoch

    def interrupted_epoch(*args, **kwargs):
        if len(epochs_run) == 1:
            raise Interrupted  # as if killed while training the second epoch
        epochs_run.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted_epoch)
    with pytest.raises(Interrupted):
        train(tmp_path, splits, "first", checkpoints, schedule)
    assert (checkpoints / "epoch.pt").is_file()
    epochs_run.clear()
    monkeypatch.setattr(training, "train_epoch", lambda *a, **k: epochs_run.append(1) or real_epoch(*a, **k))
    got, history, logs = train(tmp_path, splits, "second", checkpoints, schedule)
    assert "train: resumed from epoch 1 of 3 (checkpoint in train-key.resume)" in logs
    assert len(epochs_run) == 2, "the resumed run trained more than the epochs left"
    assert history == want_history
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def start(folder: Path, out: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "compress", "run", "r.yaml", "-o", out], cwd=folder, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip


def trained(out: Path) -> Artifact:
    (folder,) = [p for p in (out / "cache").glob("train-*") if p.is_dir() and not p.name.endswith(".resume")]
    return Artifact.load(folder)


@pytest.mark.slow
def test_a_killed_run_resumes_training_mid_stage(tmp_path):
    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(RECIPE)
    whole = start(tmp_path, "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    killed = start(tmp_path, "out")
    deadline = time.time() + 300
    while killed.poll() is None and time.time() < deadline:
        if list((tmp_path / "out" / "cache").glob("train-*.resume/epoch.pt")):
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    assert not list((tmp_path / "out" / "cache").glob("train-*/artifact.json")), "killed after the stage finished"
    rerun = start(tmp_path, "out")
    log = rerun.stderr.read()
    assert rerun.wait(timeout=600) == 0, log
    assert "train: resumed from epoch " in log and "train: 1/6" not in log, log
    assert not list((tmp_path / "out" / "cache").glob("*.resume")), "the finished stage left its checkpoint"
    want, got = trained(tmp_path / "whole"), trained(tmp_path / "out")
    assert got.meta["history"] == want.meta["history"]
    a, b = load_torch(want).state_dict(), load_torch(got).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
