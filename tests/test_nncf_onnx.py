"""`quantize` with `backend: nncf`: NNCF's quantization written as U8S8 QDQ ONNX for ONNX Runtime,
run for real on a small Vision Transformer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from compress.models.zoo import vit
from compress.stages.export import ExportStage
from compress.stages.quantize import QuantizeStage
from compress.stages.train import TrainStage
from tests.test_quantize import digits, source, stage  # noqa: F401 - digits is a fixture

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def transformer(tmp_path_factory, digits):  # noqa: F811
    """A two-block ViT trained briefly on 8x8 digits, and its fp32 ONNX export."""
    tmp = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    model = vit(in_channels=1, num_classes=10, image_size=8, patch=2, dim=32, depth=2, heads=2)
    art = stage(TrainStage(type="train", name="train", epochs=3, lr=0.003), source(tmp, model), tmp, digits)
    return tmp, stage(ExportStage(type="export", name="export"), art, tmp, digits)


def activation_zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [constants[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]


def session(path, optimized=None, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level, options.intra_op_num_threads = level, 1
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def accuracy(path, splits) -> float:
    s = session(path)
    logits = s.run(None, {s.get_inputs()[0].name: splits.x_test.astype(np.float32)})[0]
    return 100 * float(np.mean(logits.argmax(1) == splits.y_test))


def test_onnxruntime_runs_every_quantized_matmul_of_the_nncf_file_on_integer_kernels(transformer, digits, tmp_path):  # noqa: F811
    tmp, exported = transformer
    cfg = QuantizeStage(type="quantize", name="nq", backend="nncf", model_type="transformer",
                        calibration={"samples": 64})  # fmt: skip
    out = stage(cfg, exported, tmp, digits)
    assert out.kind == "onnx" and out.meta["backend"] == "nncf" and out.meta["activations"] == "uint8"
    zero_points = activation_zero_points(onnx.load(str(out.path)))
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    session(out.path, tmp_path / "optimized.onnx")
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    # NNCF's signed activations left the q, k and v MatMuls of both blocks in float, and its float
    # bias the head's Gemm.
    float_ops = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & dequantized]
    assert not float_ops, "ONNX Runtime left these quantized MatMuls and Gemms in float"
    assert sum(n.op_type in ("MatMulIntegerToFloat", "QLinearMatMul") for n in graph.node) >= 12  # 6 weighted per block
    assert accuracy(out.path, digits) >= accuracy(exported.path, digits) - 2.0


@pytest.fixture(scope="module")
def nncf_file(transformer, digits):  # noqa: F811
    """NNCF's own ONNX quantization of the ViT (signed activations, float Gemm bias), as written."""
    import nncf

    model = onnx.load(str(transformer[1].path))
    name = model.graph.input[0].name
    data = nncf.Dataset([{name: digits.x_train[i : i + 1].astype(np.float32)} for i in range(32)])
    return nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=32)


def outputs(model: onnx.ModelProto, path, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    """The model's outputs on x; by default with every Q/DQ computed as written."""
    onnx.save(model, str(path))
    s = session(path, level=level)
    return s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]


def test_unsigned_activations_compute_exactly_what_nncf_signed_ones_do(nncf_file, digits, tmp_path):  # noqa: F811
    from compress.stages.quantize.nncf_onnx import unsigned_activations

    signed = onnx.ModelProto()
    signed.CopyFrom(nncf_file)
    assert any(z.dtype == np.int8 for z in activation_zero_points(signed))
    a = outputs(signed, tmp_path / "signed.onnx", digits.x_test)
    assert unsigned_activations(signed) == len(activation_zero_points(signed))
    np.testing.assert_array_equal(a, outputs(signed, tmp_path / "unsigned.onnx", digits.x_test))


def test_a_gemm_with_its_bias_added_apart_runs_on_onnxruntime_qgemm_with_the_same_outputs(nncf_file, digits, tmp_path):  # noqa: F811
    from compress.stages.quantize.nncf_onnx import gemm_biases_apart, unsigned_activations

    model = onnx.ModelProto()
    model.CopyFrom(nncf_file)
    unsigned_activations(model)
    a = outputs(model, tmp_path / "before.onnx", digits.x_test)
    session(tmp_path / "before.onnx", tmp_path / "before-optimized.onnx")
    assert "QGemm" not in {n.op_type for n in onnx.load(str(tmp_path / "before-optimized.onnx")).graph.node}
    assert gemm_biases_apart(model) == 1  # the classifier head
    np.testing.assert_allclose(a, outputs(model, tmp_path / "after.onnx", digits.x_test), rtol=1e-6, atol=1e-6)
    session(tmp_path / "after.onnx", tmp_path / "after-optimized.onnx")
    assert "QGemm" in {n.op_type for n in onnx.load(str(tmp_path / "after-optimized.onnx")).graph.node}


class TokenModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table, self.fc = torch.nn.Embedding(500, 16), torch.nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.table(ids)).mean(1)


def test_token_table_rows_are_gathered_in_int8_then_dequantized_to_the_same_values(tmp_path):
    """NNCF's INT8 token table was dequantized whole on every call; after the rewrite ONNX Runtime
    keeps no DequantizeLinear of it, and the outputs are unchanged."""
    import nncf

    from compress.stages.quantize.nncf_onnx import rows_dequantized_after_gather

    torch.manual_seed(0)
    torch.onnx.export(TokenModel(), (torch.randint(0, 500, (2, 7)),), str(tmp_path / "tok.onnx"), input_names=["ids"],
                      dynamic_axes={"ids": {0: "batch", 1: "length"}}, dynamo=False)  # fmt: skip
    rng = np.random.default_rng(0)
    data = nncf.Dataset([{"ids": rng.integers(0, 500, (1, 7))} for _ in range(16)])
    model = nncf.quantize(onnx.load(str(tmp_path / "tok.onnx")), data, model_type=nncf.ModelType.TRANSFORMER,
                          subset_size=16)  # fmt: skip
    onnx.save(model, str(tmp_path / "whole.onnx"))
    assert rows_dequantized_after_gather(model) == 1
    onnx.save(model, str(tmp_path / "rows.onnx"))
    ids = {"ids": rng.integers(0, 500, (3, 11))}
    whole = session(tmp_path / "whole.onnx").run(None, ids)[0]
    np.testing.assert_array_equal(session(tmp_path / "rows.onnx", tmp_path / "optimized.onnx").run(None, ids)[0], whole)
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    constants = {i.name for i in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants]


def test_ignore_keeps_the_named_onnx_nodes_in_float(transformer, digits):  # noqa: F811
    tmp, exported = transformer
    cfg = QuantizeStage(type="quantize", name="nq-ignore", backend="nncf", model_type="transformer",
                        ignore=["re:blocks.0/attn/q/"], calibration={"samples": 32})  # fmt: skip
    graph = onnx.load(str(stage(cfg, exported, tmp, digits).path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = {n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & dequantized}
    assert "/blocks/blocks.1/attn/q/MatMul" in quantized and "/blocks/blocks.0/attn/q/MatMul" not in quantized


def test_backend_nncf_without_nncf_installed_names_the_extra_before_any_work(monkeypatch):
    import importlib.util

    from compress.errors import RuntimeMissingError
    from compress.recipe import recipe_from_text
    from compress.requirements import check_requirements

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else found(name, *a))
    recipe = recipe_from_text("name: r\nmodel: {arch: resnet}\nstages:\n  - type: export\n  - type: quantize\n"
                              "    name: nq\n    backend: nncf\n", "r.yaml")  # fmt: skip
    with pytest.raises(RuntimeMissingError) as info:
        check_requirements(recipe, [])
    assert "stage 'nq'" in info.value.message and "'nncf'" in info.value.message
    assert info.value.hint == "pip install 'compress-edge[openvino]'"


def tiny_bert(path) -> None:
    """A two-layer BERT with random weights, exported with its attention mask, whose masked
    positions carry float32's least value: NNCF's default (CNN) scheme quantizes that tensor."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()  # fmt: skip

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)

    ids, mask = torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long)
    axes = {"ids": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"}}
    torch.onnx.export(Pooled(), (ids, mask), str(path), input_names=["ids", "mask"], dynamic_axes=axes,
                      dynamo=False, opset_version=17)  # fmt: skip


def test_nncf_arithmetic_overflow_is_reported_on_the_stage_with_the_scheme_to_use(tmp_path):
    import nncf

    from compress.stages.quantize.openvino import graph_ops, nncf_options, run_nncf

    tiny_bert(tmp_path / "bert.onnx")
    model, rng = onnx.load(str(tmp_path / "bert.onnx")), np.random.default_rng(0)
    masks = [(np.arange(16) < rng.integers(4, 16)).astype(np.int64)[None] for _ in range(16)]
    data = nncf.Dataset([{"ids": rng.integers(0, 100, (1, 16)), "mask": m} for m in masks])
    cfg = QuantizeStage(type="quantize", name="nq", backend="nncf", calibration={"samples": 16})
    logged: list[str] = []
    ops = graph_ops(model)
    quantized = run_nncf(cfg, model, data, ops, nncf_options(cfg, ops, 16), SimpleNamespace(log=logged.append))
    scales = [numpy_helper.to_array(t) for t in quantized.graph.initializer if t.name.startswith("scale_")]
    assert not all(np.isfinite(s).all() for s in scales)  # what the warning is about
    assert any("NNCF's arithmetic failed" in m and "model_type: transformer" in m for m in logged), logged
