"""Executors: a sweep run as a graph of stage tasks in a pool of local processes or on a local Ray
cluster (both real) makes the same variants as the local loop, computes a shared prefix once, and
resumes after its driver is interrupted."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.errors import RecipeError
from compress.recipe import recipe_from_text
from tests.conftest import ROOT, cli, interruptible

RECIPE = """\
name: sw
seed: 0
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 2, batch_size: 64, lr: 0.01}
  - {type: prune, ratio: 0.5}
  - {type: finetune, epochs: 1, batch_size: 64, lr: 0.005}
  - {type: export}
  - {type: quantize, calibration: {samples: 64}}
sweep:
  parameters: {"stages[prune].ratio": [0.25, 0.5]}
targets:
  - name: t
    runtime: onnxruntime
    batch_sizes: [1]
    protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.05, max_seconds: 5, rounds: 1}
"""
# Ray binds to loopback only with this set before it starts (see the test infrastructure notes).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def outcome(out: Path) -> tuple[dict, list[str]]:
    """({variant: (accuracy, parent)}, sorted stage-result folders) of a finished run."""
    report = json.loads((out / "report.json").read_text())
    variants = {v["name"]: (v["accuracy"]["value"], v["parent"]) for v in report["variants"]}
    folders = sorted(p.name for p in (out / "cache").iterdir() if p.is_dir() and not p.name.startswith("."))
    return variants, folders


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "sw.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def local(recipe) -> tuple[dict, list[str]]:
    out = recipe.parent / "local"
    done = cli("run", str(recipe), "-o", str(out), "-q", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(out)


@pytest.mark.slow
def test_two_processes_make_what_the_local_loop_makes_and_train_once(recipe, local):
    out = recipe.parent / "processes"
    done = cli(
        "run", str(recipe), "-o", str(out), "--executor", "processes", "--jobs", "2", env={"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcome(out) == local
    variants, folders = local
    assert len(variants) == 4 and sum(f.startswith("train-") for f in folders) == 1
    assert "executor processes: 9 stage task(s) for 2 point(s), 2 at a time" in done.stderr
    assert json.loads((out / "report.json").read_text())["cache"] == {"reused": 0, "computed": 10}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (the ray extra)")
def test_a_ray_sweep_interrupted_mid_run_resumes_with_what_it_finished(recipe, local):
    out = recipe.parent / "ray"
    args = [sys.executable, "-m", "compress", "run", str(recipe), "-o", str(out), "--executor", "ray", "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **RAY_ENV}
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=interruptible)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((out / "cache").glob("prune-*")) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the run ended before it could be interrupted"
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130, driver.stderr.read()[-2000:]
    assert not (out / "report.json").exists()

    done = cli("run", *args[4:], env=RAY_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert outcome(out) == local
    cache = json.loads((out / "report.json").read_text())["cache"]
    assert cache["reused"] >= 2 and cache["reused"] + cache["computed"] == 10  # source, train and a prune at least


def test_executor_settings_are_checked():
    recipe = recipe_from_text(RECIPE + "executor: processes\n", "r.yaml")
    assert recipe.executor.type == "processes" and recipe.executor.jobs is None
    with pytest.raises(RecipeError) as info:
        recipe_from_text(RECIPE + "executor: {type: processes, address: auto}\n", "r.yaml")
    assert "address applies to executor ray" in str(info.value.problems[0])
    with pytest.raises(RecipeError) as info:
        recipe_from_text(RECIPE + "executor: dask\n", "r.yaml")
    assert "executor.type" in str(info.value.problems[0]) and "local, processes, ray" in str(info.value.problems[0])


def test_resources_do_not_change_the_cache_key():
    from compress.pipeline import Pipeline

    plain = recipe_from_text(RECIPE, "r.yaml")
    sized = recipe_from_text(RECIPE.replace("{type: train,", "{type: train, resources: {cpus: 2},"), "r.yaml")
    keys = [Pipeline(r, Path("/nonexistent")).stage_key(r.stages[0], "p", {}, "d") for r in (plain, sized)]
    assert keys[0] == keys[1] and sized.stages[0].resources.cpus == 2


def test_a_data_parallel_run_on_a_task_executor_is_refused_before_any_process_starts(recipe, tmp_path):
    done = cli("run", str(recipe), "-o", str(tmp_path / "o"), "--nproc", "2", "--executor", "processes")
    assert done.returncode == 2, done.stderr
    assert "executor processes runs stages as tasks" in done.stderr and "drop --nproc" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
