"""A failing stage or measurement does not take the run down, and never passes unnoticed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TINY_TARGET, write_mlp_onnx
from tests.test_cli import compress

TWO_BRANCHES = """\
name: branches
model: {arch: resnet, options: {width: 4, blocks: [1, 1]}}
models:
  odd: {python: odd.py:build}
data: {source: digits, image_size: 16}
stages:
  - {type: train, epochs: 1}
  - {type: export}
  - {type: train, name: odd-train, input: odd, epochs: 1}
  - {type: export, name: odd-export, variant: odd}
targets: [tiny-ort]
"""

# A model whose forward fails in evaluation: the kind of error a library raises inside a stage.
ODD = """
import torch.nn as nn

class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        if not self.training:
            raise IndexError("index 192 is out of bounds for dimension 0 with size 192")
        return self.fc(x.flatten(1))

def build():
    return Odd()
"""


@pytest.mark.slow
def test_an_unexpected_error_fails_its_branch_and_the_report_keeps_the_rest(write, tmp_path):
    write("tiny-ort.yaml", TINY_TARGET)
    write("odd.py", ODD)
    write("r.yaml", TWO_BRANCHES)
    result = compress("run", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out"))
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    log = tmp_path / "out" / "logs" / "odd-train.log"
    assert ("error: stage 'odd-train' failed: IndexError: index 192 is out of bounds for dimension 0 with size 192"
            in result.stderr) and f"the full traceback is in {log}" in result.stderr  # fmt: skip
    assert "odd-export: skipped: it needs odd-train, which failed" in result.stderr
    assert "Traceback" in log.read_text() and "raise IndexError" in log.read_text()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["fp32"]
    assert report["variants"][0]["latency"] and report["variants"][0]["accuracy"]
    assert [(f["stage"], f["log"]) for f in report["failures"]] == [("odd-train", str(log))]
    assert "stage 'odd-train' failed" in (tmp_path / "out" / "report.md").read_text()


def test_a_model_that_cannot_be_measured_fails_the_run(tmp_path):
    import onnx
    from onnx import helper

    model = onnx.load(write_mlp_onnx(tmp_path / "m.onnx"))
    model.graph.node[1].op_type, model.graph.node[1].domain = "NotAnOp", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, tmp_path / "custom.onnx")
    (tmp_path / "t.yaml").write_text(TINY_TARGET)
    result = compress("profile", str(tmp_path / "custom.onnx"), "--target", str(tmp_path / "t.yaml"),
                      "-o", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 6
    assert "error: custom on tiny-ort: onnxruntime could not run this model" in result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["variants"][0]["errors"]


@pytest.mark.slow
def test_a_failed_run_leaves_no_earlier_report_to_gate(write, tmp_path):
    write("tiny-ort.yaml", TINY_TARGET)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((90, 8, 8), dtype=np.float32), y=np.arange(90) % 3)
    write("r.yaml", "name: r\nmodel: {arch: resnet, options: {width: 4, blocks: [1, 1]}}\n"
          "data: {source: npz, path: d.npz, image_size: 8}\nstages: [{type: train, epochs: 1}, {type: export}]\n"
          "targets: [tiny-ort]\n")  # fmt: skip
    out = tmp_path / "out"
    assert compress("run", str(tmp_path / "r.yaml"), "-o", str(out)).returncode == 0
    assert (out / "report.json").is_file()
    (tmp_path / "d.npz").write_bytes(b"not an npz file")
    failed = compress("run", str(tmp_path / "r.yaml"), "-o", str(out))
    assert failed.returncode != 0
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
