"""Where the time goes: real ONNX Runtime and OpenVINO profiles of a small exported model, fp32 and
static-QDQ-quantized, summed into its parts, through a measuring job and into the report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from compress.agent import parts
from compress.agent.job import _profile
from compress.artifact import Kind
from compress.measure.jobs import Deployable, Inputs, attach, measure_target
from compress.report.html import to_html
from compress.report.layers import op_table
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
    assert parts.runs_for(20.0, seconds=0.5) == 25 and parts.runs_for(20.0, seconds=5.0) == 50  # capped at 1 s


def test_a_failing_profiler_costs_the_breakdown_not_the_latency(models, tmp_path):
    path = tmp_path / "gone.onnx"
    path.write_bytes(models["fp32"].read_bytes())
    loaded = OnnxSession(path, 1)
    path.unlink()  # profiling loads the file again: it fails, as a real runtime error
    entry = {"latency": [{"batch_size": 1, "stats": {"p50_ms": 0.1}}]}
    target = TargetSpec(name="t", runtime="onnxruntime")
    logged = []
    _profile("m", loaded, RULES, {1: feeds()}, entry, target, logged.append, tmp_path)
    (timed,) = entry["latency"]
    assert "parts" not in timed and "layers" not in timed and timed["stats"] == {"p50_ms": 0.1}
    assert timed["profile_error"].startswith("onnxruntime could not profile this model: ")
    assert logged == [f"warning: t: m: {timed['profile_error']}"]


@pytest.fixture(scope="module", params=RUNTIMES)
def measured(request, models, tmp_path_factory) -> tuple[TargetSpec, dict, Path]:
    """Both models measured through a local measuring job at batches 1 and 2, with their rules,
    and a copy of the fp32 model without rules; whole profiles written to the returned folder."""
    target = TargetSpec(name=f"local-{request.param}", runtime=request.param, threads=1, batch_sizes=[1, 2],
                        protocol=PROTOCOL)  # fmt: skip
    deployables = {name: Deployable(path, Kind.ONNX, name, parts=RULES) for name, path in models.items()}
    deployables["plain"] = Deployable(models["fp32"], Kind.ONNX, "fp32")
    out = tmp_path_factory.mktemp("report")
    inputs = Inputs({1: feeds(1), 2: feeds(2)})
    results = measure_target(target, deployables, inputs, None, lambda line: None, out)
    assert results.error is None and not results.errors, results
    return target, results, out


def test_every_model_gets_its_time_per_op_type_and_slowest_layers_with_the_whole_profile_beside(measured):
    target, results, out = measured
    for name in ("fp32", "int8", "plain"):
        one, two = sorted(results.latency[name], key=lambda lat: lat.batch_size)
        layers = one.layers
        assert two.layers is None and layers.nodes > 0 and layers.profiled_ms > 0
        assert sum(layers.by_op.values()) == pytest.approx(one.p50_ms, rel=1e-3)
        assert list(layers.by_op.values()) == sorted(layers.by_op.values(), reverse=True)
        assert len(layers.top) == min(parts.TOP_LAYERS, layers.nodes)
        assert [n["ms"] for n in layers.top] == sorted((n["ms"] for n in layers.top), reverse=True)
        trace = json.loads((out / layers.trace).read_text())
        assert layers.trace == f"profiles/{name}@{target.name}.json" and trace["batch_size"] == 1
        assert len(trace["nodes"]) == layers.nodes
        assert sum(n["ms"] for n in trace["nodes"]) == pytest.approx(layers.profiled_ms, rel=1e-3)
    if target.runtime == "onnxruntime":  # the runtime's own op types, after fusion and quantization
        assert "QLinearConv" in results.latency["int8"][0].layers.by_op
        assert "QLinearConv" not in results.latency["fp32"][0].layers.by_op


def test_a_measuring_job_records_the_time_per_part_at_the_smallest_batch(measured):
    _, results, _ = measured
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
    target, results, _ = measured
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


def test_the_report_shows_time_per_op_type_and_the_slowest_layers(measured):
    target, results, _ = measured
    variants = [Variant(name="fp32", stages=["export"], format="onnx", precision="fp32", path="fp32.onnx", size_bytes=1),
                Variant(name="int8", stages=["export", "quantize"], parent="fp32", format="onnx-qdq", precision="int8",
                        path="int8.onnx", size_bytes=1)]  # fmt: skip
    attach(variants, target, results)
    info = TargetInfo(name=target.name, runtime=target.runtime, device="cpu", threads=1, batch_sizes=[1, 2],
                      protocol=PROTOCOL)  # fmt: skip
    report = Report(created="2026-01-01T00:00:00+00:00", recipe=RecipeInfo(name="r", path=None, hash="abc"),
                    environment={}, baseline="fp32", targets=[info], variants=variants)  # fmt: skip
    header, rows = op_table(report, info)
    assert header[:3] == ("variant", "batch", "p50 ms") and header[-2:] == ("other ms", "vs parent")
    assert [r[0] for r in rows] == ["fp32", "int8"] and rows[0][-1] == "–"
    slowest = max(results.latency["int8"][0].layers.by_op.items(), key=lambda item: item[1])[0]
    assert f"{slowest} ms" in header
    moved = rows[1][-1].split(", ")
    assert len(moved) == 3 and all("→" in m and m.endswith(" ms") for m in moved)
    md = to_markdown(report)
    assert "### Time per op type" in md and f"| int8 | 1 | {variants[1].latency_at(target.name, 1).p50_ms:.3f} |" in md
    page = to_html(report, plots={target.name: b""})
    assert "<h3>Time per op type</h3>" in page and "Slowest layers of int8" in page


def test_the_not_faster_check_quotes_measured_shares(models, tmp_path):
    """The diagnosis reads the profile: shares of quantize/dequantize and float kernels, a fixed-cost
    part, and what changed against the parent (figures given here, the graph read from a real file)."""
    from compress.report.diagnose import not_faster_warnings

    def latency(p50: float, by_op: dict, parts: dict | None = None) -> dict:
        return {"target": "t", "runtime": "onnxruntime", "batch_size": 1, "threads": 1, "precision": "x",
                "p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "std_ms": 0, "min_ms": p50,
                "max_ms": p50, "iterations": 10, "seconds": 1, "throughput": 1, "parts": parts,
                "layers": {"by_op": by_op, "top": [], "profiled_ms": p50, "nodes": 9}}  # fmt: skip

    (tmp_path / "int8.onnx").write_bytes(models["int8"].read_bytes())
    fp32 = Variant(name="fp32", stages=["export"], format="onnx", precision="fp32", path="fp32.onnx", size_bytes=1,
                   latency=[latency(1.0, {"Conv": 0.9, "Relu": 0.1})])  # fmt: skip
    int8 = Variant(name="int8", stages=["export", "quantize"], parent="fp32", format="onnx-qdq", precision="int8",
                   path="int8.onnx", size_bytes=1,
                   latency=[latency(1.0, {"Conv": 0.4, "DequantizeLinear": 0.3, "QuantizeLinear": 0.2, "QLinearConv": 0.1},
                                    {"backbone": 0.6, "postprocess": 0.4})])  # fmt: skip
    info = TargetInfo(name="t", runtime="onnxruntime", device="cpu", threads=1, batch_sizes=[1], protocol=PROTOCOL)
    report = Report(created="2026-01-01T00:00:00+00:00", recipe=RecipeInfo(name="r", path=None, hash="abc"),
                    environment={}, baseline="fp32", targets=[info], variants=[fp32, int8])  # fmt: skip
    (warning,) = not_faster_warnings(report, tmp_path)
    assert warning.startswith("int8 is only 1.00× faster than fp32 on t (batch 1); measured at batch 1: "
                              "Conv 40 %, DequantizeLinear 30 %, QuantizeLinear 20 %; ")  # fmt: skip
    assert (
        "; 50 % of its time is in quantize/dequantize nodes (DequantizeLinear 0.300 ms, QuantizeLinear 0.200 ms)"
        in warning
    )
    assert "; 40 % of its time is in float convolution/matrix kernels (Conv 0.400 ms)" in warning
    assert "; postprocess is 40 % of end-to-end time, a cost compression does not shrink" in warning
    assert (
        "; against fp32: Conv 0.900→0.400 ms, DequantizeLinear 0.000→0.300 ms, QuantizeLinear 0.000→0.200 ms" in warning
    )
