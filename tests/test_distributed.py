"""Data-parallel runs: `compress run --nproc N` under torchrun, with gloo on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compress import distributed
from tests.conftest import TINY_TARGET, cli

# Trained to convergence (about 96 % test accuracy), so the two runs' accuracies are comparable.
RECIPE = """\
name: tiny
seed: 0
model:
  arch: resnet
  options: {width: 8, blocks: [1, 1]}
data:
  source: digits
  image_size: 16
stages:
  - type: train
    epochs: 8
    batch_size: 64
    lr: 0.01
  - type: finetune
    epochs: 1
    lr: 0.001
    distill: {teacher: train}
  - type: export
targets: [tiny-ort]
"""
# Both runs take the same steps over the same examples, but with two processes BatchNorm normalises
# each half batch on its own and float sums run in another order: the trajectories drift apart by
# chance, not by a bias (measured here: 95.8 % in one process, 95.6 % in two).
TOLERANCE_POINTS = 3.0


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_rank_0_writes(write, tmp_path):
    write("tiny-ort.yaml", TINY_TARGET)
    recipe = write("tiny.yaml", RECIPE)
    env = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        done = cli("run", str(recipe), "-o", str(out), "--nproc", str(nproc), cwd=tmp_path, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[nproc] = done, json.loads((out / "report.json").read_text())
    (one, single), (two, double) = runs[1], runs[2]
    assert "training on cpu with 2 processes" in two.stderr and "with 2 processes" not in one.stderr
    accuracy = {n: report["variants"][0]["accuracy"]["value"] for n, (_, report) in runs.items()}
    assert abs(accuracy[1] - accuracy[2]) <= TOLERANCE_POINTS, accuracy
    assert double["variants"][0]["details"]["training_processes"] == 2
    # Rank 0 alone speaks and writes: one table, one report, and exactly the files one process
    # writes, cache folders included, whose names hold the keys (the process count enters none).
    assert two.stderr.count("report written to") == 1 and two.stdout.count("tiny-ort (onnxruntime") == 1
    assert double["cache"] == single["cache"] == {"reused": 0, "computed": 4}
    assert files(tmp_path / "out2") == files(tmp_path / "out1")
    folders = sorted(p.name for p in (tmp_path / "out2" / "cache").iterdir() if p.is_dir())
    assert [f.rsplit("-", 1)[0] for f in folders] == ["data", "export", "finetune", "model", "train"]


def test_nproc_under_torchrun_is_a_usage_error(tiny_recipe, tmp_path):
    done = cli("run", str(tiny_recipe), "-o", str(tmp_path / "out"), "--nproc", "2", env={"WORLD_SIZE": "2"})
    assert done.returncode == 2, done.stderr
    assert "under torchrun, leave --nproc out" in done.stderr


def test_the_launcher_exits_with_rank_0s_code_not_torchruns(monkeypatch, tmp_path):
    """torchrun exits 1 whenever a rank fails; the command keeps rank 0's documented code."""
    seen = {}

    class Torchrun:
        def __init__(self, command, env):
            seen["command"] = command
            monkeypatch.setenv(distributed.EXIT_FILE, env[distributed.EXIT_FILE])
            monkeypatch.setenv("RANK", "0")
            distributed.record_exit(6)  # what rank 0's `compress run` does as it exits

        def wait(self):
            return 1

    monkeypatch.setattr(subprocess, "Popen", Torchrun)
    assert distributed.launch(3, ["run", "r.yaml", "--quiet"]) == 6
    command = seen["command"]
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "-m", "compress",
                           "run", "r.yaml", "--quiet"]  # fmt: skip
