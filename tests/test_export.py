"""The export stage refuses an ONNX file that does not compute what the PyTorch module computes."""

from __future__ import annotations

import numpy as np
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


def test_export_matches_pytorch(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    out = ExportStage(type="export", name="export").run(source(tmp_path, model), context(tmp_path, x))
    assert out.kind == "onnx" and out.meta["export_max_abs_diff"] < 1e-4


def test_export_mismatch_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.abs(rng.standard_normal((4, 1, 4, 4))), -np.abs(rng.standard_normal((4, 1, 4, 4)))])
    x = x.astype(np.float32)
    with pytest.raises(StageError) as info:
        ExportStage(type="export", name="export").run(source(tmp_path, SignBranch()), context(tmp_path, x))
    assert "differs from PyTorch" in info.value.message and info.value.hint


def test_dynamo_exporter_also_works(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    cfg = ExportStage(type="export", name="export", exporter="dynamo", opset=18)
    out = cfg.run(source(tmp_path, model), context(tmp_path, x))
    assert out.meta["exporter"] == "dynamo"
