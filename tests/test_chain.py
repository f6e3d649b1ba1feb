"""Real torchvision CNNs (squeeze-and-excitation, depthwise, bottlenecks) through the whole chain:
prune, fine-tune with distillation, export, INT8 for ONNX Runtime and for OpenVINO, run in both."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from torch import nn

from compress.artifact import Artifact, load_torch, save_torch
from compress.data import load_data
from compress.models import build_model
from compress.recipe import DataSpec, ModelSpec
from compress.runtimes.onnxruntime import OnnxSession
from compress.stages.export import ExportStage
from compress.stages.finetune import FinetuneStage
from compress.stages.prune import PruneStage
from compress.stages.quantize import QuantizeStage
from tests.conftest import openvino_missing
from tests.test_prune import stage_ctx

MODELS = ["efficientnet_b0", "mobilenet_v3_large", "resnet50"]
SIZE = 32


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 32x32 in three channels, cut to a few batches so each model runs in seconds."""
    splits = load_data(DataSpec(image_size=SIZE, channels=3), tmp_path_factory.mktemp("data"), seed=0)
    for name in ("train", "val", "test"):
        setattr(splits, f"x_{name}", getattr(splits, f"x_{name}")[:128])
        setattr(splits, f"y_{name}", getattr(splits, f"y_{name}")[:128])
    return splits


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def squeeze_excitations(model: nn.Module) -> list[tuple[nn.Conv2d, nn.Conv2d]]:
    from torchvision.ops import SqueezeExcitation  # EfficientNet's and MobileNetV3's

    return [(m.fc1, m.fc2) for m in model.modules() if isinstance(m, SqueezeExcitation)]


def check_pruned(before: nn.Module, after: nn.Module) -> None:
    """Every layer is consistent with its neighbours and the network is really narrower."""
    old, new = convs(before), convs(after)
    assert old.keys() == new.keys()
    narrower = [n for n in old if new[n].out_channels < old[n].out_channels]
    assert len(narrower) > len(old) / 3, f"only {len(narrower)} of {len(old)} convolutions lost channels"
    for name, conv in new.items():
        if old[name].groups > 1:  # depthwise: groups follow the channels they split
            assert conv.groups == conv.in_channels == conv.out_channels, name
            assert conv.out_channels < old[name].out_channels, f"depthwise {name} kept every channel"
    pairs = list(zip(squeeze_excitations(before), squeeze_excitations(after), strict=True))
    for (fc1, _), (fc1_new, fc2_new) in pairs:  # SE: reduce takes what expand gives back
        assert fc1_new.in_channels == fc2_new.out_channels < fc1.in_channels
        assert fc1_new.out_channels == fc2_new.in_channels <= fc1.out_channels
    assert not pairs or any(new[1].in_channels < old[1].in_channels for old, new in pairs), "no SE squeeze pruned"


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(1) == labels).mean() * 100)


def run_onnxruntime(path, x: np.ndarray) -> np.ndarray:
    return OnnxSession(path, threads=1).run({"input": x})[0]


def run_openvino(path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    )
    return compiled({"input": x})[compiled.output(0)]


@pytest.mark.slow
@pytest.mark.openvino
@pytest.mark.parametrize("arch", MODELS)
def test_torchvision_cnn_prunes_distills_exports_and_runs_int8_in_both_runtimes(arch, digits, tmp_path):
    assert openvino_missing() is None
    model = build_model(ModelSpec(arch=f"torchvision:{arch}"), tmp_path, 3, 10, SIZE).eval()
    (tmp_path / "src").mkdir()
    artifact = Artifact("torch", save_torch(model, tmp_path / "src"), folder=tmp_path / "src", key="src")

    def stage(cfg, parent: Artifact) -> Artifact:
        ctx = stage_ctx(tmp_path, digits, cfg.name)
        ctx.refs = {"model": artifact}  # the teacher: the model before pruning
        out = cfg.run(parent, ctx)
        out.folder = tmp_path / cfg.name
        return out

    pruned = stage(PruneStage(type="prune", name="prune", ratio=0.5), artifact)
    check_pruned(model, load_torch(pruned))
    tuned = stage(
        FinetuneStage(type="finetune", name="finetune", epochs=1, batch_size=32, distill={"teacher": "model"}), pruned
    )
    assert tuned.meta["distilled_from"] == "model"
    exported = stage(ExportStage(type="export", name="export"), tuned)
    ort_int8 = stage(QuantizeStage(type="quantize", name="int8-ort", calibration={"samples": 32}), exported)
    ov_int8 = stage(QuantizeStage(type="quantize", name="int8-ov", backend="openvino", calibration={"samples": 32}),
                    exported)  # fmt: skip

    ops = Counter(n.op_type for n in onnx.load(str(ort_int8.path)).graph.node)
    assert ops["DequantizeLinear"] > len(convs(model)) and ort_int8.meta["quantized_ops"] >= len(convs(model))
    assert ov_int8.meta["quantized_layers"] >= len(convs(model)), "NNCF quantized every convolution"
    assert all("Conv" not in name for name in ov_int8.meta["float_layers"])
    gates = ov_int8.meta.get("float_ops", {}).get("Multiply", 0)  # sigmoid gates stay float: SE scales, SiLU
    assert gates >= len(squeeze_excitations(model)) and (gates > 0) == (arch != "resnet50")
    x, y = digits.x_test[:64], digits.y_test[:64]
    reference = run_onnxruntime(exported.path, x)
    for path in (exported.path, ort_int8.path):
        for run in (run_onnxruntime, run_openvino):
            logits = run(path, x)
            assert logits.shape == (64, 10) and np.isfinite(logits).all()
            assert 0 <= accuracy(logits, y) <= 100
    ov_logits = run_openvino(ov_int8.path, x)
    assert ov_logits.shape == (64, 10) and np.isfinite(ov_logits).all()
    # INT8 follows the float model it came from: most predictions agree
    for logits in (run_onnxruntime(ort_int8.path, x), ov_logits):
        assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.5
