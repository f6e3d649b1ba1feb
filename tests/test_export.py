"""The export stage refuses an ONNX file that does not compute what the PyTorch module computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.artifact import Artifact, save_torch
from compress.data import Splits
from compress.errors import StageError
from compress.stages import StageContext
from compress.stages.export import ExportStage
from compress.tasks import get_task


class SignBranch(torch.nn.Module):
    """Data-dependent control flow: tracing records one branch, so the export is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out * 2 if x.sum() > 0 else out * -3


def context(tmp_path, x: np.ndarray) -> StageContext:
    y = np.zeros(len(x), dtype=np.int64)
    splits = Splits(x, y, x, y, x, y, [str(i) for i in range(10)])
    work = tmp_path / "work"
    work.mkdir()
    return StageContext(splits=splits, task=get_task("classification"), seed=0, workdir=work, log=lambda m: None)


def source(tmp_path, model) -> Artifact:
    folder = tmp_path / "src"
    folder.mkdir()
    return Artifact("torch", save_torch(model, folder), folder=folder, lineage=[])


def graph_shapes(path) -> dict[str, list]:
    """Each graph input's and output's dimensions: a symbolic name or a fixed size."""
    graph = onnx.load(str(path)).graph
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }


def agrees_with_pytorch(model: torch.nn.Module, path, batch: int) -> bool:
    """Fresh inputs at a batch size the export never saw, run in ONNX Runtime and in PyTorch."""
    from compress.runtimes.onnxruntime import OnnxSession

    x = np.random.default_rng(1).standard_normal((batch, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return np.allclose(OnnxSession(path, threads=1).run({"input": x})[0], expected, atol=1e-5, rtol=1e-4)


def test_export_matches_pytorch(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    out = ExportStage(type="export", name="export").run(source(tmp_path, model), context(tmp_path, x))
    path = tmp_path / "work" / out.path
    assert out.kind == "onnx" and path.name == "model.onnx"
    assert graph_shapes(path) == {"input": ["batch", 1, 4, 4], "logits": ["batch", 10]}
    assert agrees_with_pytorch(model, path, batch=5)


def test_export_mismatch_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.abs(rng.standard_normal((4, 1, 4, 4))), -np.abs(rng.standard_normal((4, 1, 4, 4)))])
    x = x.astype(np.float32)
    with pytest.raises(StageError) as info:
        ExportStage(type="export", name="export").run(source(tmp_path, SignBranch()), context(tmp_path, x))
    assert "exported ONNX differs from PyTorch" in info.value.message and "exceeds atol 0.0001" in info.value.message
    assert "try the other exporter" in info.value.hint


def test_dynamo_exporter_also_works(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    cfg = ExportStage(type="export", name="export", exporter="dynamo", opset=18)
    out = cfg.run(source(tmp_path, model), context(tmp_path, x))
    path = tmp_path / "work" / out.path
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import if o.domain == ""] == [("", 18)]
    assert graph_shapes(path) == {"input": ["batch", 1, 4, 4], "logits": ["batch", 10]}
    assert agrees_with_pytorch(model, path, batch=5)
