"""DETR and Deformable DETR detectors: output format, training, ONNX export (ONNX Runtime, OpenVINO),
INT8 quantization, per-part rules, pruning and loading a local Hugging Face folder."""

from __future__ import annotations

import copy
import logging
import re
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("scipy")  # the Hungarian matcher of the set loss

from compress.detection.detector import Detector  # noqa: E402
from compress.models import zoo  # noqa: E402
from compress.models.attention import attention_layers  # noqa: E402

SIZE, CLASSES = 64, 3
FAMILIES = ["detr", "deformable-detr"]
TINY = {"backbone": "resnet10", "d_model": 64, "ffn": 128, "queries": 10}
COMPUTE = ("Conv", "MatMul", "Gemm", "GridSample")


def build(family: str, **options) -> Detector:
    torch.manual_seed(0)
    return zoo.BUILDERS[family](in_channels=3, num_classes=CLASSES, image_size=SIZE, **{**TINY, **options}).eval()


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def decode(logits: torch.Tensor, boxes: torch.Tensor, focal: bool) -> torch.Tensor:
    """The reference decoding: best class per query, cxcywh in [0, 1] to corner pixels."""
    probs = logits.sigmoid() if focal else logits.softmax(-1)[..., :-1]
    scores, classes = probs.max(-1)
    cx, cy, w, h = (boxes * SIZE).unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores, classes.float()], -1)


def export(model: Detector, path, batch: int = 2) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {"input": {0: "batch"}, "detections": {0: "batch"}} if model.dynamic_batch else None
        assert model.exporter == "torchscript", "this helper exports with the exporter the detectors declare"
        torch.onnx.export(model, (images(batch),), str(path), dynamo=False, opset_version=model.opset,
                          input_names=["input"], output_names=["detections"], dynamic_axes=axes)  # fmt: skip


def assert_same_detections(got: np.ndarray, expected: np.ndarray, atol: float = 1e-3) -> None:
    """Rows in query order: scores within atol, corners within atol of the image size, and the same
    classes in the five best rows of each image."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[..., 4], expected[..., 4], atol=atol)
    np.testing.assert_allclose(got[..., :4], expected[..., :4], atol=atol * SIZE)
    top = np.argsort(-expected[..., 4], axis=-1)[..., :5]
    np.testing.assert_array_equal(
        np.take_along_axis(got[..., 5], top, -1), np.take_along_axis(expected[..., 5], top, -1)
    )


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    model = build(request.param)
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    export(model, path)
    return model, path


@pytest.mark.parametrize("family", FAMILIES)
def test_detections_follow_the_interface(family):
    model = build(family)
    assert isinstance(model, Detector) and family in zoo.DETECTORS
    x = images()
    with torch.no_grad():
        out = model(x)
        raw = model.detr(pixel_values=model.normalize(x))
    assert out.shape == (2, TINY["queries"], 6) and model.max_detections == TINY["queries"]
    torch.testing.assert_close(out, decode(raw.logits, raw.pred_boxes, model.focal))
    assert ((out[..., 4] >= 0) & (out[..., 4] <= 1)).all()
    assert set(out[..., 5].unique().tolist()) <= set(range(CLASSES))
    assert (out[..., 2] >= out[..., 0]).all() and (out[..., 3] >= out[..., 1]).all()
    # compress images (p - 0.5) / 0.5 reach the model ImageNet-normalised, exactly
    pixels = (x + 1) / 2
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(model.normalize(x), (pixels - mean) / std)
    names = dict(model.named_modules())
    seen = {}
    handles = [
        names[n].register_forward_hook(lambda m, i, o, n=n: seen.update({n: o})) for n in model.distill_features()
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    assert all(seen[n].shape == (2, TINY["queries"], TINY["d_model"]) for n in model.distill_features())


def synthetic_batch(n: int = 2) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Bright rectangles on a dark background; class by rectangle size."""
    rng = np.random.default_rng(0)
    x, targets = -torch.ones(n, 3, SIZE, SIZE), []
    for i in range(n):
        boxes, labels = [], []
        for c in range(2):
            side = 12 + 12 * c
            x1, y1 = rng.integers(0, SIZE - side, 2)
            x[i, :, y1 : y1 + side, x1 : x1 + side] = 1.0
            boxes.append([x1, y1, x1 + side, y1 + side])
            labels.append(c)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return x, targets


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_training_steps_reduce_the_loss(family):
    model = build(family)
    x, targets = synthetic_batch()
    with torch.no_grad():
        before = model.losses(x, targets)
    assert {"loss", "loss_ce", "loss_bbox", "loss_giou"} <= set(before) and before["loss"].dim() == 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        model.losses(x, targets)["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model.losses(x, targets)
        empty = model.losses(x, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2)
    assert after["loss"] < before["loss"], (before["loss"], after["loss"])
    assert torch.isfinite(empty["loss"])


def test_onnx_runtime_matches_pytorch(exported):
    import onnx

    from compress.runtimes.onnxruntime import OnnxSession

    model, path = exported
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    values = [*graph.value_info, *graph.output]
    assert not [v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]  # float32 only
    session = OnnxSession(path, threads=1)
    for n in (2, 1, 3) if model.dynamic_batch else (2,):
        x = images(n, seed=n)
        with torch.no_grad():
            expected = model(x).numpy()
        assert_same_detections(session.run({"input": x.numpy()})[0], expected)


@pytest.mark.openvino
def test_openvino_compiles_and_matches(exported):
    import openvino as ov

    model, path = exported
    x = images(2, seed=5)
    with torch.no_grad():
        expected = model(x).numpy()
    default = ov.Core().compile_model(str(path), "CPU")  # may pick bf16 on CPUs that have it
    assert default(x.numpy())[0].shape == expected.shape
    fp32 = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert_same_detections(fp32(x.numpy())[0], expected)


def test_static_int8_quantization_runs(exported, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from compress.runtimes.onnxruntime import OnnxSession

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter({"input": images(1, seed=10 + i).numpy()} for i in range(3))

        def get_next(self):
            return next(self.batches, None)

    model, path = exported
    out = tmp_path / "int8.onnx"
    logging.disable(logging.WARNING)  # the quantizer warns per 1-D weight through the root logger
    try:
        quantize_static(str(path), str(out), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"])  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
    import onnx

    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) > 10
    got = OnnxSession(out, threads=1).run({"input": images(2).numpy()})[0]
    assert got.shape == (2, TINY["queries"], 6) and np.isfinite(got).all()
    assert set(np.unique(got[..., 5])) <= set(range(CLASSES))


def part_of(name: str, op: str, rules: list) -> str | None:
    """The first rule whose prefixes start the node name (or whose op types hold the op)."""
    return next((part for part, prefixes, ops in rules if name.startswith(tuple(prefixes)) or op in ops), None)


def test_parts_cover_every_compute_node(exported):
    import onnx

    model, path = exported
    nodes = onnx.load(str(path)).graph.node
    parts = {n.name: part_of(n.name, n.op_type, model.parts) for n in nodes}
    unmatched = [n.name for n in nodes if n.op_type in COMPUTE and parts[n.name] is None]
    assert not unmatched, unmatched
    names = [p[0] for p in model.parts]
    assert names == ["backbone", "encoder", "decoder", "heads", "postprocess"]
    for part in names:
        assert any(parts[n.name] == part and n.op_type in COMPUTE + ("ArgMax",) for n in nodes), part
    # every node inside a submodule of the Hugging Face model (calls after the first get a _N suffix)
    children = {name for name, _ in model.detr.model.named_children()}
    scoped = [n.name for n in nodes if n.name.startswith("/detr/model/") and n.name.count("/") > 3]
    inside = [s for s in scoped if re.sub(r"_\d+$", "", s.split("/")[3]).split(".")[0] in children]
    assert inside and all(parts[s] for s in inside), [s for s in inside if not parts[s]]
    backbone = [n for n in nodes if parts[n.name] == "backbone" and n.op_type == "Conv"]
    assert len(backbone) == sum(isinstance(m, torch.nn.Conv2d) for m in model.detr.model.backbone.modules())
    assert all(n.op_type not in COMPUTE for n in nodes if parts[n.name] == "postprocess")


def prune(model: Detector, ratio: float) -> None:
    """As the prune stage does: torch-pruning over the detector's scope, heads through the adapters."""
    import torch_pruning as tp

    scope = model.pruning_scope(images(1))
    attention = [f for f in attention_layers(scope.module) if f.prunable]
    heads = {p: f.adapter.heads(f.module) for f in attention for p in f.adapter.projections(f.module)}
    pruner = tp.pruner.MetaPruner(scope.module, scope.example, tp.importance.GroupMagnitudeImportance(),
                                  pruning_ratio=ratio, ignored_layers=scope.ignored,
                                  output_transform=scope.output_transform, num_heads=heads,
                                  prune_num_heads=True, head_pruning_ratio=ratio)  # fmt: skip
    pruner.step()
    for f in attention:
        f.adapter.set_heads(f.module, pruner.num_heads[f.adapter.projections(f.module)[0]])


@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_shrinks_and_the_result_exports(family, tmp_path):
    from compress.runtimes.onnxruntime import OnnxSession

    model, x = build(family), images(2, seed=3)
    count = lambda: sum(p.numel() for p in model.parameters())  # noqa: E731
    with torch.no_grad():
        before = model(x)
    params = count()
    prune(model, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    assert count() == params
    d_model, queries = model.detr.config.d_model, model.max_detections
    prune(model, 0.3)
    assert count() < 0.9 * params
    modules = dict(model.detr.named_modules())
    assert all(m.out_features < TINY["ffn"] for n, m in modules.items() if n.endswith("mlp.fc1"))  # FFNs
    assert all(m.out_features < d_model for n, m in modules.items() if n.endswith("self_attn.q_proj"))  # heads
    inner = modules["model.backbone.model.encoder.stages.1.layers.0.layer.0.convolution"]
    assert (
        inner.out_channels < 128
        and modules["model.backbone.model.encoder.stages.1.layers.0.layer.1.convolution"].out_channels == 128
    )
    assert all(m.normalized_shape == (d_model,) for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    with torch.no_grad():
        pruned = model(x)
    assert pruned.shape == (2, queries, 6)
    export(model, tmp_path / "pruned.onnx")
    got = OnnxSession(tmp_path / "pruned.onnx", threads=1).run({"input": x.numpy()})[0]
    assert_same_detections(got, pruned.numpy())


@pytest.mark.parametrize("family", ["detr", "deformable_detr"])
def test_a_saved_folder_builds_through_hf(family, tmp_path):
    import transformers

    from compress.detection.detr import FrozenBatchNorm2d, build
    from compress.models.sources import HuggingFace, InputShape

    saved = build(family, CLASSES, backbone="resnet10", d_model=64, ffn=128, queries=10).detr
    saved.model.backbone.model.embedder.embedder.normalization.running_mean.fill_(0.1)
    folder = tmp_path / "checkpoint"
    saved.save_pretrained(folder)
    reference = getattr(transformers, type(saved).__name__).from_pretrained(folder).eval()  # Hugging Face batch norms
    x = images(2)

    model = HuggingFace().build(str(folder.name), {}, InputShape(3, CLASSES, SIZE, tmp_path))
    assert type(model).__name__ == ("DetrDetector" if family == "detr" else "DeformableDetrDetector")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    with torch.no_grad():
        raw = reference(pixel_values=model.normalize(x))
        torch.testing.assert_close(model.eval()(x), decode(raw.logits, raw.pred_boxes, model.focal))

    with pytest.warns(UserWarning, match="re-initialising the class head"):
        other = HuggingFace().build(str(folder), {}, InputShape(3, CLASSES + 2, SIZE, tmp_path))
    with torch.no_grad():
        out = other.eval()(x)
    assert out.shape == (2, 10, 6) and out[..., 5].max() <= CLASSES + 1
    heads = [m for n, m in other.detr.named_modules() if n.startswith(("class_labels_classifier", "class_embed."))]
    assert heads and all(m.out_features in (CLASSES + 2, CLASSES + 3) for m in heads)


def test_a_folder_with_its_own_image_statistics(tmp_path):
    import json

    from compress.detection.detr import build
    from compress.models.hf import load_hf

    build("detr", CLASSES, backbone="resnet10", d_model=64, ffn=128, queries=10).detr.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    model = load_hf(".", tmp_path, CLASSES)
    x = images(1)
    torch.testing.assert_close(model.normalize(x), x)
    assert copy.deepcopy(model)(x).shape == (1, 10, 6)
