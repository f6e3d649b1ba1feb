"""INT8 quantization: backends, options, accuracy-aware PTQ and QAT, run for real."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from compress.artifact import Artifact, save_torch
from compress.data import load_data
from compress.errors import RecipeError, StageError
from compress.recipe import DataSpec, recipe_from_text
from compress.report.diagnose import likely_reasons
from compress.stages import StageContext
from compress.stages.export import ExportStage
from compress.stages.quantize import QuantizeStage
from compress.stages.quantize.onnxruntime import choose_reduce_range
from compress.stages.train import TrainStage
from compress.tasks import get_task


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_data(DataSpec(image_size=8), tmp_path_factory.mktemp("data"), seed=0)


def ctx(tmp_path, splits, name: str) -> StageContext:
    work = tmp_path / name
    work.mkdir()
    return StageContext(splits=splits, task=get_task("classification"), seed=0, workdir=work, log=lambda m: None,
                        shared_cache=tmp_path, show_progress=False)  # fmt: skip


def stage(cfg, artifact: Artifact, tmp_path, splits) -> Artifact:
    out = cfg.run(artifact, ctx(tmp_path, splits, cfg.name))
    out.folder = tmp_path / cfg.name
    return out


def source(tmp_path, model) -> Artifact:
    folder = tmp_path / "src"
    folder.mkdir()
    return Artifact("torch", save_torch(model, folder), folder=folder, key="src")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A small CNN trained on 8x8 digits, and its fp32 ONNX export."""
    tmp = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    from compress.models.zoo import resnet

    model = resnet(in_channels=1, num_classes=10, image_size=8, width=8, blocks=(1, 1))
    art = stage(TrainStage(type="train", name="train", epochs=4, lr=0.01), source(tmp, model), tmp, digits)
    return tmp, art, stage(ExportStage(type="export", name="export"), art, tmp, digits)


def test_reduce_range_is_chosen_from_the_isa():
    cfg = QuantizeStage(type="quantize", name="q")
    assert choose_reduce_range(cfg, ["avx2", "avx512f", "avx512_vnni"]) == (False, None)
    on, reason = choose_reduce_range(cfg, ["avx2", "avx512f"])
    assert on and "no VNNI" in reason
    assert choose_reduce_range(QuantizeStage(type="quantize", name="q", reduce_range=False), ["avx2"]) == (False, None)


@pytest.mark.parametrize(
    "extra, message",
    [("preset: mixed", "preset do(es) not apply to backend 'onnxruntime'"),
     ("backend: openvino\n    activations: int8", "activations do(es) not apply to backend 'openvino'"),
     ("backend: openvino\n    calibration: {method: entropy}", "'entropy' is ONNX Runtime's"),
     ("backend: nncf\n    activations: int8", "activations do(es) not apply to backend 'nncf'"),
     ("backend: nncf\n    max_accuracy_drop: 1", "backend 'nncf' does method: ptq without max_accuracy_drop"),
     ("backend: nncf\n    method: dynamic", "backend 'nncf' does method: ptq"),
     ("method: qat\n    backend: openvino", "method 'qat' exports a QDQ ONNX file"),
     ("qat: {epochs: 1}", "'qat' settings need method: qat"),
     ("fallback: {epochs: 1}", "fallback (QAT when PTQ misses its budget) needs max_accuracy_drop"),
     ("method: qat\n    qat: {weight_range: median}",
      "r.yaml:6:11: stages[0].qat.weight_range: unknown value 'median'; expected one of: minmax, mse")],
)  # fmt: skip
def test_options_must_fit_the_backend(extra, message):
    text = f"name: r\nmodel: {{arch: resnet}}\nstages:\n  - type: export\n  - type: quantize\n    {extra}\n"
    if "method: qat" in extra:
        text = text.replace("  - type: export\n  - type: quantize", "  - type: quantize") + "  - type: export\n"
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml")
    assert any(message in str(p) for p in info.value.problems), info.value.problems


def test_qat_takes_a_pytorch_model():
    text = "name: r\nmodel: {arch: resnet}\nstages:\n  - type: export\n  - type: quantize\n    method: qat\n"
    with pytest.raises(RecipeError) as info:
        recipe_from_text(text, "r.yaml")
    assert "needs a PyTorch model" in str(info.value.problems[0])


@pytest.mark.openvino
def test_nncf_ptq_gives_an_ir_with_int8_kernels(trained, digits):
    import openvino

    from compress.runtimes.openvino import OpenVINOSession

    tmp, _, exported = trained
    cfg = QuantizeStage(type="quantize", name="ov", backend="openvino", calibration={"samples": 64})
    out = stage(cfg, exported, tmp, digits)
    assert out.kind == "openvino" and out.path.suffix == ".xml" and out.path.with_suffix(".bin").is_file()
    session = OpenVINOSession(out.path, 1, 1, "latency", "fp32")
    assert session.precision == "int8" and set(session.layer_precisions()) <= {"u8", "i8"}
    assert likely_reasons(out.path) == [], "every weighted layer of the IR reads INT8 weights"
    float_ir = exported.path.parent / "float.xml"
    openvino.save_model(openvino.convert_model(exported.path), float_ir)
    assert likely_reasons(float_ir)[0].startswith("no weighted layer runs in INT8")


@pytest.mark.openvino
def test_openvino_records_the_precision_it_runs_in(trained):
    """fp32 stays fp32 even where OpenVINO would pick bf16 by default; bf16 is used where the CPU
    plugin lists BF16 among its capabilities (AVX-512 BF16 or AMX) and reported as fp32 elsewhere."""
    import openvino

    from compress.runtimes.openvino import OpenVINOSession

    _, _, exported = trained
    assert OpenVINOSession(exported.path, 1, 1, "latency", "fp32").precision == "fp32"
    cpu_has_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16 = OpenVINOSession(exported.path, 1, 1, "latency", "bf16")
    assert bf16.precision == ("bf16" if cpu_has_bf16 else "fp32")


def ort_optimized_ops(path, tmp_path) -> Counter:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def onnx_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """An ONNX graph's initializers and Constant node outputs, by name."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


@pytest.fixture(scope="module")
def qat_int8(trained, digits):
    """The trained CNN after one epoch of QAT, exported as a QDQ ONNX file."""
    tmp, train, _ = trained
    cfg = QuantizeStage(type="quantize", name="qat", method="qat", qat={"epochs": 1, "lr": 1e-4})
    return stage(cfg, train, tmp, digits)


def test_qat_export_stores_int8_weights_and_runs_int8_kernels(trained, qat_int8, tmp_path):
    _, _, exported = trained
    out = qat_int8
    assert out.meta["method"] == "qat"
    convs = sum(n.op_type in ("Conv", "Gemm") for n in onnx.load(str(exported.path)).graph.node)
    model = onnx.load(str(out.path))
    values = onnx_values(model)
    stored = {t.name for t in model.graph.initializer}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored]
    assert len(weights) == convs == out.meta["int8_weight_tensors"], "every weight is stored as INT8"
    for node in weights:  # symmetric INT8: signed values, zero points all 0
        assert values[node.input[0]].dtype == np.int8 and not values[node.input[2]].any(), node.name
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and not any(n.input[0] in stored for n in quantize), "no float weight is quantized at run time"
    assert {values[n.input[2]].dtype for n in quantize} == {np.dtype(np.uint8)}  # U8 activations by default
    ops = ort_optimized_ops(out.path, tmp_path)
    assert ops["QLinearConv"] >= 4, ops  # ONNX Runtime runs the convolutions as integer kernels


@pytest.mark.openvino
def test_qat_export_runs_int8_kernels_in_openvino_as_accurately_as_in_onnxruntime(qat_int8, digits):
    from compress.runtimes.onnxruntime import OnnxSession
    from compress.runtimes.openvino import OpenVINOSession

    out = qat_int8
    assert OpenVINOSession(out.path, 1, 1, "latency", "fp32").layer_precisions().keys() <= {"u8", "i8"}
    x, y = digits.x_test, digits.y_test
    ort_acc = (OnnxSession(out.path, 1).run({"input": x})[0].argmax(1) == y).mean()
    ov_acc = (OpenVINOSession(out.path, 1, 1, "latency", "fp32").run({"input": x})[0].argmax(1) == y).mean()
    assert abs(ort_acc - ov_acc) <= 0.02


def test_qat_export_that_disagrees_with_the_fake_quantized_model_is_refused(digits, tmp_path, monkeypatch):
    """The stage compares the exported file's predictions with the fake-quantized model's: the same
    QAT run passes as is, and is refused once the classifier's INT8 rows are stored reversed."""
    from compress.stages.quantize import qat

    src = source(tmp_path, trained_mlp(digits, 1))
    cfg = QuantizeStage(type="quantize", name="qat", method="qat", qat={"epochs": 1, "lr": 1e-4})
    stage(cfg, src, tmp_path, digits)  # the faithful export is accepted
    store = qat.store_int8_weights

    def store_reversed_classifier(path):
        folded = store(path)
        model = onnx.load(str(path))
        gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
        dequantize = next(n for n in model.graph.node if n.output[0] == gemm.input[1])
        weight = next(t for t in model.graph.initializer if t.name == dequantize.input[0])
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[::-1].copy(), weight.name))
        onnx.save(model, str(path))
        return folded

    monkeypatch.setattr(qat, "store_int8_weights", store_reversed_classifier)
    with pytest.raises(StageError) as info:
        stage(cfg.model_copy(update={"name": "qat-bad"}), src, tmp_path, digits)
    assert "the QAT export disagrees with the fake-quantized model" in info.value.message


def trained_mlp(digits, hidden_layers: int) -> nn.Module:
    torch.manual_seed(0)
    hidden = [layer for i in range(hidden_layers) for layer in (nn.Linear(32 if i else 64, 32), nn.ReLU())]
    model = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 0.01)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def outlier_mlp(digits, broken: int = 1, hidden_layers: int = 1) -> nn.Module:
    """A trained MLP rescaled so its function is unchanged but per-tensor INT8 ruins `broken` layers:
    in each, one hidden unit's input weights are multiplied by 1000 and its output weights divided by 1000."""
    model = trained_mlp(digits, max(broken, hidden_layers))
    with torch.no_grad():
        for i in range(broken):
            model[1 + 2 * i].weight[i] *= 1000
            model[1 + 2 * i].bias[i] *= 1000
            model[3 + 2 * i].weight[:, i] /= 1000
    return model


def dead_unit_mlp(digits) -> nn.Module:
    """A trained MLP with a hidden unit that never fires and huge output weights, as BatchNorm folding
    leaves after a dead ReLU channel: harmless in float, ruinous for MinMax per-tensor INT8 weights."""
    model = trained_mlp(digits, 1)
    with torch.no_grad():
        model[1].weight[0], model[1].bias[0] = 0.0, -1.0
        model[3].weight[:, 0] = 300 * model[3].weight.abs().max()
    return model


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_accuracy_aware_ptq_meets_a_budget_plain_ptq_misses(backend, digits, tmp_path):
    model = outlier_mlp(digits, hidden_layers=3)  # deep enough that the control keeps some layers in INT8
    exported = stage(ExportStage(type="export", name="export"), source(tmp_path, model), tmp_path, digits)
    common = dict(type="quantize", backend=backend, per_channel=False, calibration={"samples": 128})
    plain = stage(QuantizeStage(name="plain", **common), exported, tmp_path, digits)
    aware = stage(QuantizeStage(name="aware", max_accuracy_drop=0.5, **common), exported, tmp_path, digits)
    from compress.measure.probe import predict
    from compress.runtimes import get_runtime
    from compress.targets import TargetSpec

    runtime = get_runtime(TargetSpec(name="t", runtime="openvino" if backend == "openvino" else "onnxruntime"))

    def val(art):
        return digits_score(predict(runtime.load(art.path, 2), get_task("classification"), digits.x_val), digits.y_val)

    fp32 = val(exported)
    assert fp32 - val(plain) > 0.5, "the rescaled layer breaks per-tensor INT8"
    assert fp32 - val(aware) <= 0.5
    if backend == "onnxruntime":
        control = aware.meta["accuracy_control"]
        assert control["met"] and control["float_nodes"] and any(step["float_layer"] for step in control["steps"])
    else:
        assert aware.meta["float_layers"] and aware.meta["accuracy_control"]["met"]


def test_accuracy_control_ranks_by_drop_when_several_layers_break(digits, tmp_path):
    """With two ruined layers, keeping either alone in float regains nothing; the layers are then
    ranked by the drop each causes when quantized alone, and both go back to float."""
    exported = stage(
        ExportStage(type="export", name="export"), source(tmp_path, outlier_mlp(digits, 2)), tmp_path, digits
    )
    cfg = QuantizeStage(
        type="quantize", name="aware", per_channel=False, calibration={"samples": 128}, max_accuracy_drop=0.5
    )
    aware = stage(cfg, exported, tmp_path, digits)
    control = aware.meta["accuracy_control"]
    gemms = [n.name for n in onnx.load(str(exported.path)).graph.node if n.op_type == "Gemm"]
    assert control["met"] and control["ranked_by"] == "drop quantized alone"
    assert sorted(control["float_nodes"]) == sorted(gemms[:2]), control["steps"]
    assert likely_reasons(aware.path)[0].startswith("2 weighted layer(s) left in floating point")
    tried = [step for step in control["steps"] if step.get("int8_layer")]
    assert [(t["int8_layer"], t["kept"]) for t in tried] == [(control["float_nodes"][0], False)]


def test_layers_not_needed_in_float_go_back_to_int8(digits, tmp_path):
    """The search may send a harmless layer to float before the one that meets the budget; the
    pass that follows puts it back in INT8 and keeps the needed ones in float."""
    from compress.stages.quantize.accuracy_control import requantize, val_accuracy
    from compress.stages.quantize.onnxruntime import quantize_ort

    exported = stage(
        ExportStage(type="export", name="export"),
        source(tmp_path, outlier_mlp(digits, hidden_layers=3)),
        tmp_path,
        digits,
    )
    gemms = [n.name for n in onnx.load(str(exported.path)).graph.node if n.op_type == "Gemm"]
    cfg = QuantizeStage(type="quantize", name="aware", per_channel=False, calibration={"samples": 128})
    context = ctx(tmp_path, digits, "aware")
    calibration = digits.calibration(128, 0)

    def quantize(excluded, path=context.workdir / "model.onnx"):
        quantize_ort(cfg, exported.path, path, calibration, excluded, False, context)
        return path

    floor = val_accuracy(exported.path, context) - 0.5
    assert val_accuracy(quantize([gemms[-1]]), context) < floor  # the classifier alone in float is not enough
    needed = gemms[:2]  # the rescaled layer and the one reading its scaled-up unit
    out = quantize([gemms[-1], *needed])
    assert val_accuracy(out, context) >= floor
    steps = []
    kept_float = requantize(cfg, [gemms[-1]], [gemms[-1], *needed], floor, quantize, out, steps, context)
    assert kept_float == needed and steps[0]["kept"] and "p50_ms" in steps[0]
    assert val_accuracy(out, context) >= floor and likely_reasons(out)[0].startswith("2 weighted layer(s)")


def test_mse_weight_range_ignores_weights_whose_input_never_fires():
    from compress.stages.quantize.qat import mse_weight_scale, weight_scale

    torch.manual_seed(0)
    weight = torch.randn(8, 4)
    weight[:, 3] *= 300  # input 3 is always zero: these weights never act
    weighting = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    per_tensor = mse_weight_scale(weight, weighting, per_channel=False)
    assert per_tensor.dim() == 0 and per_tensor * 127 < weight[:, :3].abs().max() * 1.5  # near the live range
    assert weight_scale(weight, per_channel=False) > 100 * per_tensor
    per_channel = mse_weight_scale(weight, torch.ones(1, 4), per_channel=True)
    assert per_channel.shape == (8,) and torch.all(per_channel <= weight_scale(weight) * 1.0001)


def test_qat_mse_weight_range_recovers_what_minmax_loses_to_a_dead_unit(digits, tmp_path):
    from compress.runtimes.onnxruntime import OnnxSession

    model = dead_unit_mlp(digits)
    src = source(tmp_path, model)
    x, y = digits.x_test, digits.y_test
    fp32 = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100
    common = dict(type="quantize", method="qat", per_channel=False, calibration={"samples": 128})
    scores = {}
    for weight_range in ("minmax", "mse"):
        cfg = QuantizeStage(name=weight_range, qat={"epochs": 1, "lr": 1e-4, "weight_range": weight_range}, **common)
        try:
            out = stage(cfg, src, tmp_path, digits)
        except StageError:  # the export check may refuse a collapsed model
            scores[weight_range] = None
            continue
        if weight_range == "mse":  # the dead unit's weights (300x the rest) no longer set the classifier's scale
            model_file = onnx.load(str(out.path))
            gemm = [n for n in model_file.graph.node if n.op_type == "Gemm"][-1]
            dequantize = next(n for n in model_file.graph.node if n.output[0] == gemm.input[1])
            live = model[3].weight[:, 1:].abs().max().item()
            assert onnx_values(model_file)[dequantize.input[1]] * 127 < 1.5 * live
        scores[weight_range] = (OnnxSession(out.path, 1).run({"input": x})[0].argmax(1) == y).mean() * 100
    assert scores["minmax"] is None or fp32 - scores["minmax"] > 5, scores
    assert fp32 - scores["mse"] <= 1.0, (fp32, scores)


def digits_score(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(1) == labels).mean() * 100)


def test_missing_runtime_names_the_extra(tiny_recipe, tmp_path):
    """A recipe naming the OpenVINO target on a machine without OpenVINO exits 3 with the extra to install."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('openvino', 'nncf'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    text = tiny_recipe.read_text().replace("targets: [tiny-ort]", "targets: [tiny-ort, cpu-openvino]")
    tiny_recipe.write_text(text)
    env = {"PYTHONPATH": str(block), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "compress", "run", str(tiny_recipe), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "pip install 'compress-edge[openvino]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "cache").exists(), "nothing ran before the check"


def test_not_faster_warning_names_the_cause(trained, digits, tmp_path):
    from compress.report.diagnose import likely_reasons, not_faster_warnings
    from tests.test_report import sample_report

    tmp, _, exported = trained
    s8s8 = stage(QuantizeStage(type="quantize", name="s8s8", activations="int8"), exported, tmp, digits)
    assert any("S8S8" in r for r in likely_reasons(s8s8.path))
    dynamic = stage(QuantizeStage(type="quantize", name="dyn", method="dynamic"), exported, tmp, digits)
    assert any("dynamic quantization" in r for r in likely_reasons(dynamic.path))
    report = sample_report()
    slow = report.variant("worse")  # 1.0 ms against its parent's 2.0 ms would be fine; make it slower
    slow.latency[0].p50_ms = 1.95
    slow.precision, slow.path = "int8", str(s8s8.path)
    warnings = not_faster_warnings(report, tmp_path)
    assert len(warnings) == 1 and "worse is only 1.03× faster than fp32" in warnings[0] and "S8S8" in warnings[0]


def test_preprocessing_works_from_relative_folders_and_leaves_the_working_directory_clean(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from compress.stages.quantize.onnxruntime import preprocess
    from tests.conftest import write_mlp_onnx

    monkeypatch.chdir(tmp_path)
    Path("run/cache").mkdir(parents=True)
    write_mlp_onnx(Path("run/model.onnx"))
    logged = []
    ctx = SimpleNamespace(workdir=Path("run/cache"), log=logged.append)
    out = preprocess(Path("run/model.onnx"), ctx)
    assert out.name == "preprocessed.onnx" and out.is_file() and not logged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_qat_fallback_replaces_ptq_that_needs_float_layers(digits, tmp_path):
    """A dead unit ruins per-tensor PTQ of one layer: accuracy-aware PTQ meets the budget by keeping
    it in float; the fallback's QAT (MSE weight ranges) meets it with every layer in INT8."""
    model = dead_unit_mlp(digits)
    src = source(tmp_path, model)
    exported = stage(ExportStage(type="export", name="export"), src, tmp_path, digits)
    common = dict(type="quantize", per_channel=False, calibration={"samples": 128}, max_accuracy_drop=1.0)
    ptq = stage(QuantizeStage(name="ptq", **common), exported, tmp_path, digits)
    assert ptq.meta["float_nodes"], "PTQ alone keeps the ruined layer in float"
    cfg = QuantizeStage(name="fb", fallback={"epochs": 1, "lr": 1e-4, "weight_range": "mse"}, fallback_from="src",
                        **common)  # fmt: skip
    c = ctx(tmp_path, digits, "fb")
    c.refs = {"src": src}
    out = cfg.run(exported, c)
    out.folder = c.workdir
    record = out.meta["fallback"]
    assert record["reason"] == "PTQ kept 1 layer(s) in float" and record["used"] == "qat", record
    assert out.meta["method"] == "qat" and not out.meta.get("float_nodes")

    def float_weights(path) -> int:
        graph = onnx.load(str(path)).graph
        dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        return sum(n.input[1] not in dequantized for n in graph.node if n.op_type == "Gemm")

    assert float_weights(ptq.path) == 1 and float_weights(out.path) == 0, "every layer's weights in INT8"
    assert sorted(p.name for p in c.workdir.iterdir()) == ["model.onnx"], "nothing of the QAT run is left behind"


def test_fallback_starts_from_the_model_exported_for_the_stage(write):
    path = write("r.yaml", "name: r\nmodel: {arch: resnet}\nstages:\n  - {type: train}\n  - {type: prune}\n"
                 "  - {type: finetune, name: ft}\n  - {type: export}\n"
                 "  - {type: quantize, max_accuracy_drop: 0.5, fallback: {epochs: 1}}\n"
                 "  - {type: quantize, name: q2, input: export, variant: q2, max_accuracy_drop: 0.5, "
                 "fallback: {epochs: 1}, fallback_from: export}\n")  # fmt: skip
    with pytest.raises(RecipeError) as info:
        recipe_from_text(path.read_text(), str(path))
    text = "\n".join(info.value.lines())
    assert "r.yaml:9" in text and "'export' is not an earlier PyTorch stage" in text, text
    fixed = path.read_text().replace(", fallback_from: export", ", fallback_from: train")
    recipe = recipe_from_text(fixed, str(path))
    assert [s.fallback_from for s in recipe.stages if s.type == "quantize"] == ["ft", "train"]
