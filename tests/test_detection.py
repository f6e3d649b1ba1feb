"""Detection: COCO mAP, the export check for variable detections, and the small Faster R-CNN
through export (no NNCF-breaking branches), INT8 (NMS/RoIAlign/TopK in float) and pruning."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from compress.detection.metric import coco_map  # noqa: E402
from compress.detection.task import Detection  # noqa: E402

LABELS = np.array([[[10, 10, 50, 50, 0], [60, 60, 90, 100, 1], [0, 0, 0, 0, -1]],
                   [[20, 30, 60, 70, 1], [0, 0, 0, 0, -1], [0, 0, 0, 0, -1]]], np.float32)  # fmt: skip


def detections(rows: list[list[list[float]]], k: int = 5) -> np.ndarray:
    out = np.zeros((len(rows), k, 6), np.float32)
    out[:, :, 5] = -1
    for i, image in enumerate(rows):
        out[i, : len(image)] = image
    return out


def test_map_is_100_for_exact_boxes_and_drops_for_a_missed_object():
    exact = detections([[[10, 10, 50, 50, 0.9, 0], [60, 60, 90, 100, 0.8, 1]], [[20, 30, 60, 70, 0.7, 1]]])
    assert coco_map(exact, LABELS) == {"map": 100.0, "map50": 100.0, "map75": 100.0}
    missed = detections([[[10, 10, 50, 50, 0.9, 0]], [[20, 30, 60, 70, 0.7, 1]]])
    scores = coco_map(missed, LABELS)
    assert scores["map50"] == pytest.approx(75.0, abs=0.5)  # class 0 perfect, class 1 finds half


def test_map_counts_a_box_of_the_wrong_class_as_a_miss():
    wrong = detections([[[10, 10, 50, 50, 0.9, 1], [60, 60, 90, 100, 0.8, 1]], [[20, 30, 60, 70, 0.7, 1]]])
    assert coco_map(wrong, LABELS)["map50"] < 80


def test_map_at_75_separates_loose_boxes_from_tight_ones():
    loose = detections([[[14, 14, 54, 54, 0.9, 0], [64, 64, 94, 104, 0.8, 1]], [[24, 34, 64, 74, 0.7, 1]]])
    scores = coco_map(loose, LABELS)
    assert scores["map50"] == 100.0 and scores["map75"] < 50


def test_parity_accepts_identical_detections_and_refuses_a_moved_or_missing_box():
    task = Detection()
    exact = detections([[[10, 10, 50, 50, 0.9, 0], [60, 60, 90, 100, 0.8, 1]], [[20, 30, 60, 70, 0.7, 1]]])
    assert task.parity(exact, exact.copy(), 1e-4, 1e-3)[0]
    moved = exact.copy()
    moved[0, 0, :4] += 8
    assert not task.parity(exact, moved, 1e-4, 1e-3)[0]
    missing = exact.copy()
    missing[1, 0, 4] = 0
    ok, _, compared = task.parity(exact, missing, 1e-4, 1e-3)
    assert not ok and "2 of 3" in compared


@pytest.fixture(scope="module")
def frcnn():
    from compress.detection.frcnn import small_frcnn

    torch.manual_seed(0)
    return small_frcnn(3, 3, 96, widths=(8, 16, 32, 48), channels=32).eval()


def export(model, path, traceable: bool = True):
    import contextlib

    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad(), model.export_context() if traceable else contextlib.nullcontext():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["detections"])  # fmt: skip
    return path


def test_frcnn_export_has_no_branches_and_matches_onnxruntime(frcnn, tmp_path):
    import onnx
    import onnxruntime as ort

    path = export(frcnn, tmp_path / "m.onnx")
    nodes = onnx.load(str(path)).graph.node
    ops = [n.op_type for n in nodes]
    assert "If" not in ops and ops.count("NonMaxSuppression") == 2
    pooling = [n.op_type for n in nodes if "/box_roi_pool/" in n.name]
    assert "RoiAlign" in pooling and not [op for op in pooling if op.startswith("Scatter")], "levels merge by gathering"
    session = ort.InferenceSession(str(path))
    x = torch.randn(3, 1, 3, 96, 96)
    for image in x:
        with torch.no_grad():
            expected = frcnn(image).numpy()
        got = session.run(None, {"input": image.numpy()})[0]
        assert got.shape == (1, 100, 6)
        assert np.allclose(got, expected, atol=1e-4)


def test_gathered_level_merge_puts_every_roi_back_in_its_place():
    from torchvision.ops import poolers

    from compress.detection.frcnn import gathered_levels

    levels = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0])
    results = [torch.randn(int((levels == level).sum()), 4, 7, 7) for level in range(3)]
    expected = poolers._onnx_merge_levels(levels, results)
    with gathered_levels():
        assert torch.equal(poolers._onnx_merge_levels(levels, results), expected)
    assert torch.equal(poolers._onnx_merge_levels(levels, results), expected)


def test_nncf_quantizes_the_branch_free_export_and_names_the_remedy_for_branches(frcnn, tmp_path):
    import nncf
    import openvino as ov

    from compress.errors import StageError
    from compress.stages.quantize import QuantizeStage
    from compress.stages.quantize.openvino import graph_ops, nncf_error

    data = nncf.Dataset([{"input": np.random.default_rng(i).standard_normal((1, 3, 96, 96), np.float32)}
                         for i in range(2)])  # fmt: skip
    model = ov.Core().read_model(str(export(frcnn, tmp_path / "ok.onnx")))
    nncf.quantize(model, data, subset_size=2)  # must not raise
    branched = ov.Core().read_model(str(export(frcnn, tmp_path / "if.onnx", traceable=False)))
    assert any(op.get_type_name() == "If" for op in branched.get_ordered_ops())
    cfg = QuantizeStage(type="quantize", name="int8", backend="openvino")
    error = nncf_error(RuntimeError("Could not find a node x in NNCFGraph"), graph_ops(branched), cfg)
    assert isinstance(error, StageError) and "If nodes" in error.message and "onnxruntime" in error.hint


def test_pruning_scope_shrinks_backbone_pyramid_and_heads_together_but_not_outputs(frcnn):
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(frcnn)
    x = torch.randn(1, 3, 96, 96)
    scope = model.pruning_scope(x)
    pruner = tp.pruner.MetaPruner(scope.module, scope.example, tp.importance.GroupMagnitudeImportance(),
                                  pruning_ratio=0.5, ignored_layers=scope.ignored)  # fmt: skip
    pruner.step()
    inner = model.model
    assert inner.backbone.body.layer3[1][0].out_channels < 48
    assert inner.roi_heads.box_head.fc6.out_features < 256
    # RoIAlign's cost (a fixed part of every detection) scales with the pyramid's width: it must
    # shrink, the same on every level, with the layers that read it.
    widths = {m.out_channels for m in inner.backbone.fpn.layer_blocks.modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(widths) == 1 and (width := widths.pop()) < 32
    assert inner.rpn.head.conv[0][0].in_channels == width
    assert inner.roi_heads.box_head.fc6.in_features == width * 7 * 7
    assert inner.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes and background
    assert inner.rpn.head.cls_logits.out_channels == 6  # a score for each of 2 sizes x 3 aspect ratios
    with torch.no_grad():
        assert model(x).shape == (1, 100, 6)


def test_sensitivity_ratios_are_refused_for_a_detector_with_a_hint(frcnn, tmp_path):
    from compress.artifact import Artifact, save_torch
    from compress.data import Splits
    from compress.errors import StageError
    from compress.stages import StageContext
    from compress.stages.prune import PruneStage

    x = np.zeros((2, 3, 96, 96), np.float32)
    y = np.zeros((2, 1, 5), np.float32)
    splits = Splits(x, y, x, y, x, y, ["a", "b", "c"])
    source = Artifact("torch", save_torch(frcnn, tmp_path), folder=tmp_path)
    work = tmp_path / "p"
    work.mkdir()
    ctx = StageContext(splits=splits, task=Detection(), seed=0, workdir=work, log=lambda m: None)
    with pytest.raises(StageError) as info:
        PruneStage(type="prune", name="p", scope="sensitivity").run(source, ctx)
    assert "scope: sensitivity" in info.value.message and info.value.hint == "set scope: uniform"
    assert not any(work.iterdir()), "nothing written"


RECIPE = """\
name: coco-frcnn
seed: 0
model:
  arch: frcnn
  options: {widths: [8, 16, 32, 48], channels: 32, head: 64}
data: {source: coco, task: detection, path: coco, image_size: 64, channels: 3}
stages:
  - {type: train, epochs: 2, batch_size: 4, lr: 0.002}
  - {type: export}
  - {type: quantize, calibration: {samples: 8}}
targets: [tiny-ort]
"""
TARGET = """\
name: tiny-ort
runtime: onnxruntime
threads: 1
batch_sizes: [1]
protocol: {warmup: 1, min_iterations: 5, min_seconds: 0.05, rounds: 1, ci_target: 0}
"""


@pytest.mark.slow
def test_a_detector_trains_on_a_coco_folder_and_is_scored_by_map_through_onnxruntime(tmp_path):
    import compress
    from tests.test_detection_data import write_coco

    write_coco(tmp_path / "coco", count=30)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "tiny-ort.yaml").write_text(TARGET)
    report = compress.run(tmp_path / "recipe.yaml", tmp_path / "out", log=None)
    fp32, int8 = (report.variant(n) for n in ("fp32", "int8"))
    for variant in (fp32, int8):
        accuracy = variant.accuracy
        assert accuracy.metric == "mAP" and accuracy.runtime == "onnxruntime" and accuracy.samples == 6
        assert set(accuracy.details) == {"mAP@.5", "mAP@.75"} and 0 <= accuracy.value <= accuracy.details["mAP@.5"]
        (latency,) = variant.latency
        assert {"backbone", "neck", "heads", "postprocess"} <= set(latency.parts)
        assert sum(latency.parts.values()) == pytest.approx(latency.p50_ms, rel=1e-3)
    assert int8.details["float_ops"] == {"NonMaxSuppression": 2, "RoiAlign": 2, "TopK": 2}
    assert "float_ops" not in fp32.details  # a float model lists no ops "kept in float"
    page = (tmp_path / "out" / "report.md").read_text()
    assert "mAP@.5" in page and "Where the time goes" in page


@pytest.mark.parametrize(
    ("model", "data", "says"),
    [("{arch: frcnn}", "{source: digits}", "is a detector; it needs `data.task: detection`"),
     ("{arch: resnet}", "{source: shapes, task: detection, channels: 3, image_size: 64}", "is not a detector"),
     ("{arch: 'torchvision:maskrcnn_resnet50_fpn'}", "{source: shapes, task: detection, channels: 3, image_size: 64}",
      "is not supported")],
)  # fmt: skip
def test_validation_locates_a_model_that_does_not_fit_the_task(tmp_path, model, data, says):
    import compress
    from compress.errors import RecipeError

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {model}\ndata: {data}\nstages: [{{type: train}}, {{type: export}}]\n")
    with pytest.raises(RecipeError) as caught:
        compress.load_recipe(recipe)
    (problem,) = caught.value.problems
    assert problem.path == "model.arch" and problem.line == 2 and says in problem.message
