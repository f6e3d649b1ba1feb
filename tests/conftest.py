from __future__ import annotations

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
