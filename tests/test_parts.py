"""Where the time goes: real ONNX Runtime and OpenVINO profiles of a small exported model, fp32 and
static-QDQ-quantized, summed into its parts, through a measuring job and into the report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from compress.agent import parts
from compress.agent.job import _profile_parts
from compress.artifact import Kind
from compress.measure.jobs import Deployable, Inputs, attach, measure_target
from compress.report.html import to_html
from compress.report.render import to_markdown
from compress.report.schema import RecipeInfo, Report, TargetInfo, Variant
from compress.runtimes.onnxruntime import OnnxSession
from compress.targets import TargetSpec

RULES = [["backbone", ["/backbone"], []], ["neck", ["/neck"]], ["head", ["/head"], []]]
SHAPE = (3, 32, 32)
PROTOCOL = {"warmup": 1, "min_iterations": 5, "min_seconds": 0.05, "rounds": 1, "ci_target": 0}


def feeds(batch: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(batch).standard_normal((batch, *SHAPE)).astype(np.float32)}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A small detector-shaped model (convolutions in `backbone`, a 1x1 `neck`, a linear `head`)
    exported by torch's TorchScript exporter, and its ONNX Runtime static QDQ copy (U8S8)."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                                torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.ReLU())  # fmt: skip
            self.neck = torch.nn.Conv2d(32, 32, 1)
            self.head = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.neck(self.backbone(x)).mean((2, 3)))

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([feeds() for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    folder = tmp_path_factory.mktemp("parts")
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), torch.randn(1, *SHAPE), str(fp32), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})  # fmt: skip
    quantize_static(str(fp32), str(int8), Calibration(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return {"fp32": fp32, "int8": int8}


def session(runtime: str, path: Path):
    if runtime == "onnxruntime":
        return OnnxSession(path, 1)
    from compress.runtimes.openvino import OpenVINOSession

    return OpenVINOSession(path, 1, 1, "latency", "fp32")


RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("model", ["fp32", "int8"])
def test_every_part_gets_the_time_of_its_nodes(models, runtime, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a profiler writing beside the caller would show here
    before = set(os.listdir(tempfile.gettempdir()))
    profile = session(runtime, models[model]).profile(feeds(), 10)
    assert not list(tmp_path.iterdir())
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("compress-profile")}
    assert profile and all(set(node) == {"name", "op", "ms"} and node["ms"] >= 0 for node in profile)
    found = parts.assign(profile, RULES)
    assert list(found)[:3] == ["backbone", "neck", "head"]
    assert all(found[part] > 0 for part in ("backbone", "neck", "head")), found
    # Both convolutions of the backbone, fused, quantized and renamed by the runtime, land in it.
    convolutions = [n for n in profile if "conv" in n["op"].lower() and "backbone" in n["name"]]
    assert len(convolutions) == 2, profile
    assert {parts.part_of(n["name"], n["op"], RULES) for n in convolutions} == {"backbone"}
    if model == "int8" and runtime == "onnxruntime":
        assert {n["op"] for n in convolutions} == {"QLinearConv"}


def test_scaled_parts_sum_to_the_p50_and_keep_the_profiled_total(models):
    profile = OnnxSession(models["fp32"], 1).profile(feeds(), 10)
    found = parts.breakdown(profile, RULES, 0.25)
    assert sum(found["parts"].values()) == pytest.approx(0.25, abs=1e-4)
    assert found["parts_profiled_ms"] == pytest.approx(sum(n["ms"] for n in profile), abs=1e-4)
    shares = parts.assign(profile, RULES)
    total = sum(shares.values())
    for part, ms in found["parts"].items():
        assert ms / 0.25 == pytest.approx(shares[part] / total, abs=1e-3)
    assert parts.breakdown([], RULES, 0.25) is None


def test_rules_first_match_op_types_runtime_prefixes_and_other():
    rules = [["postprocess", [], ["NonMaxSuppression", "RoiAlign"]], ["backbone", ["/backbone/body"]],
             ["neck", ["/backbone/fpn"], []], ["heads", ["/rpn", "roi_heads"], []]]  # fmt: skip
    assert parts.part_of("/roi_heads/NonMaxSuppression", "NonMaxSuppression", rules) == "postprocess"
    assert parts.part_of("/roi_heads/box_roi_pool/RoIAlign", "ROIAlign", rules) == "postprocess"  # any case
    assert parts.part_of("/backbone/body/layer1/0/conv1/Conv_token_3", "QLinearConv", rules) == "backbone"
    assert (
        parts.part_of("backbone.body.layer1.0.conv1.weight_DequantizeLinear", "DequantizeLinear", rules) == "backbone"
    )
    assert parts.part_of("/backbone/fpn/inner_blocks.0/Conv", "Conv", rules) == "neck"
    assert parts.part_of("x_abcd_acdb_/backbone/body/conv1/Conv/WithoutBiases", "Reorder", rules) == "backbone"
    assert parts.part_of("/roi_heads/box_head/fc6/Gemm", "Gemm", rules) == "heads"
    assert parts.part_of("Transpose_token_6", "Transpose", rules) == "other"
    found = parts.assign([{"name": "/rpn/Conv", "op": "Conv", "ms": 1.0}, {"name": "Cast", "op": "Cast", "ms": 0.5}],
                         rules)  # fmt: skip
    assert found == {"postprocess": 0.0, "backbone": 0.0, "neck": 0.0, "heads": 1.0, "other": 0.5}
    assert parts.runs_for(500.0) == parts.MIN_RUNS and parts.runs_for(0.01) == parts.MAX_RUNS
    assert parts.runs_for(20.0) == 50


def test_a_failing_profiler_costs_the_breakdown_not_the_latency(models, tmp_path):
    path = tmp_path / "gone.onnx"
    path.write_bytes(models["fp32"].read_bytes())
    loaded = OnnxSession(path, 1)
    path.unlink()  # profiling loads the file again: it fails, as a real runtime error
    entry = {"latency": [{"batch_size": 1, "stats": {"p50_ms": 0.1}}]}
    target = TargetSpec(name="t", runtime="onnxruntime")
    logged = []
    _profile_parts("m", loaded, RULES, {1: feeds()}, entry, target, logged.append, tmp_path)
    (timed,) = entry["latency"]
    assert "parts" not in timed and timed["stats"] == {"p50_ms": 0.1}
    assert timed["parts_error"].startswith("onnxruntime could not profile this model: ")
    assert logged == [f"warning: t: m: {timed['parts_error']}"]


@pytest.fixture(scope="module", params=RUNTIMES)
def measured(request, models) -> tuple[TargetSpec, dict]:
    """Both models measured through a local measuring job at batches 1 and 2, with their rules,
    and a copy of the fp32 model without rules."""
    target = TargetSpec(name=f"local-{request.param}", runtime=request.param, threads=1, batch_sizes=[1, 2],
                        protocol=PROTOCOL)  # fmt: skip
    deployables = {name: Deployable(path, Kind.ONNX, name, parts=RULES) for name, path in models.items()}
    deployables["plain"] = Deployable(models["fp32"], Kind.ONNX, "fp32")
    results = measure_target(target, deployables, Inputs({1: feeds(1), 2: feeds(2)}), None, lambda line: None)
    assert results.error is None and not results.errors, results
    return target, results


def test_a_measuring_job_records_the_time_per_part_at_the_smallest_batch(measured):
    _, results = measured
    for name in ("fp32", "int8"):
        one, two = sorted(results.latency[name], key=lambda lat: lat.batch_size)
        assert list(one.parts)[:3] == ["backbone", "neck", "head"] and all(
            one.parts[p] > 0 for p in ("backbone", "head")
        )
        assert sum(one.parts.values()) == pytest.approx(one.p50_ms, rel=1e-3)
        assert one.parts_profiled_ms > 0
        assert two.parts is None and two.parts_profiled_ms is None
    assert all(lat.parts is None for lat in results.latency["plain"])


def test_the_report_shows_where_the_time_goes(measured):
    target, results = measured
    variants = [Variant(name=name, stages=["export"], format="onnx", precision="fp32", path=f"{name}.onnx",
                        size_bytes=1) for name in ("fp32", "int8", "plain")]  # fmt: skip
    attach(variants, target, results)
    info = TargetInfo(name=target.name, runtime=target.runtime, device="cpu", threads=1, batch_sizes=[1, 2],
                      protocol=PROTOCOL)  # fmt: skip
    report = Report(created="2026-01-01T00:00:00+00:00", recipe=RecipeInfo(name="r", path=None, hash="abc"),
                    environment={}, baseline="fp32", targets=[info], variants=variants)  # fmt: skip
    md = to_markdown(report)
    section = md.split("### Where the time goes", 1)[1].split("###", 1)[0]
    assert md.index("### Where the time goes") > md.index("| variant | parent |")
    assert "| variant | batch | p50 ms | backbone ms | neck ms | head ms |" in section
    rows = [line for line in section.splitlines() if line.startswith("| fp32 |") or line.startswith("| int8 |")]
    assert len(rows) == 2 and "| plain |" not in section
    fp32 = variants[0].latency_at(target.name, 1)
    assert f"| fp32 | 1 | {fp32.p50_ms:.3f} | {fp32.parts['backbone']:.3f} (" in section
    page = to_html(report, plots={target.name: b""})
    assert "<h3>Where the time goes</h3>" in page and "<th>backbone ms</th>" in page
