"""A plug-in package adds a stage and a runtime through entry points, with no edit to compress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugin"

RECIPE = """
name: plugin-demo
model: {arch: resnet, options: {width: 4, blocks: [1, 1]}}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 1}
  - {type: export}
  - {type: ort-optimize, level: all}
targets:
  - name: basic
    runtime: onnxruntime-basic
    protocol: {warmup: 1, min_iterations: 5, min_seconds: 0.05, rounds: 1, ci_target: 0}
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The plug-in installed by pip into a folder of its own, on the path of the runs below."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(PLUGIN)], check=True, cwd=build)  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root)])}


def compress(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_plugin_stage_and_runtime_run_in_a_recipe(plugin_env, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    done = compress(plugin_env, "run", "r.yaml", "-o", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (target,) = report["targets"]
    assert target["runtime"] == "onnxruntime-basic"
    assert "onnxruntime-basic" in target["versions"]
    optimized = next(v for v in report["variants"] if v["name"] == "optimized")
    assert optimized["stages"] == ["train", "export", "ort-optimize"]
    assert optimized["parent"] == "fp32"
    assert optimized["details"]["ort_optimization"] == "all"
    assert optimized["accuracy"]["target"] == "basic" and optimized["accuracy"]["value"] > 10
    assert [lat["runtime"] for lat in optimized["latency"]] == ["onnxruntime-basic"]


def test_plugin_components_appear_in_the_schema_and_are_validated(plugin_env, tmp_path):
    schema = json.loads(compress(plugin_env, "schema", cwd=tmp_path).stdout)
    assert "ort-optimize" in json.dumps(schema["$defs"]["OrtOptimize"])
    assert "onnxruntime-basic" in schema["$defs"]["TargetSpec"]["properties"]["runtime"]["enum"]
    (tmp_path / "bad.yaml").write_text(RECIPE.replace("level: all", "level: most"))
    done = compress(plugin_env, "validate", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "bad.yaml:8:26:" in done.stderr and "stages[2].level: unknown value 'most'" in done.stderr


def test_without_the_plugin_its_stage_is_an_unknown_type(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = compress(env, "validate", "r.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown type 'ort-optimize'" in done.stderr


def test_a_broken_plugin_is_a_one_line_error(tmp_path):
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise ImportError('needs a package that is missing')\n")
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[compress.stages]\nbroken = broken_plugin:Stage\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parent.parent)])}
    (tmp_path / "r.yaml").write_text(RECIPE)
    done = compress(env, "validate", "r.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("error: plug-in stage 'broken' (broken_plugin:Stage) could not be loaded: needs a package that is missing"
            in done.stderr)  # fmt: skip


CRASH_TARGET = """
name: crashy
runtime: crash-on-load
protocol: {warmup: 1, min_iterations: 5, min_seconds: 0.05, rounds: 2, ci_target: 0}
"""


def test_a_runtime_crashing_on_one_model_costs_only_that_model(plugin_env, tmp_path):
    """The plug-in's crash-on-load runtime kills its process (SIGSEGV) loading crash.onnx: that model
    gets an error naming the signal, the other is measured, and the report is written."""
    from tests.conftest import write_mlp_onnx

    good, bad = write_mlp_onnx(tmp_path / "good.onnx"), write_mlp_onnx(tmp_path / "crash.onnx")
    (tmp_path / "crashy.yaml").write_text(CRASH_TARGET)
    done = compress(plugin_env, "profile", str(bad), str(good), "-t", "crashy.yaml", "-o", "out", cwd=tmp_path)
    assert done.returncode == 6, done.stderr  # the report is written; a model that was not measured fails the run
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    assert variants["crash"]["errors"] == ["crashy: crash-on-load crashed (SIGSEGV) while loading model 'crash'"]
    assert variants["crash"]["latency"] == []
    assert [lat["batch_size"] for lat in variants["good"]["latency"]] == [1] and not variants["good"]["errors"]
    assert variants["good"]["latency"][0]["p50_ms"] > 0
    assert report["targets"][0]["error"] is None and "crash-on-load" in report["targets"][0]["versions"]
    assert "crashy: timing 1 variant(s) at batch 1" in done.stderr  # the child's log, streamed
    assert "crash-on-load crashed (SIGSEGV)" in (tmp_path / "out" / "report.md").read_text()
