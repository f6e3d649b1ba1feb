"""Quantization-aware training (`quantize` with `method: qat`), exported as a QDQ ONNX file.

BatchNorm is folded into the preceding convolutions (torch.fx), then fake quantization is placed
where ONNX Runtime's static quantizer puts QuantizeLinear/DequantizeLinear pairs: per-channel
symmetric INT8 on Conv/Linear weights (or per-tensor), per-tensor activations on each Conv/Linear input and on
each Conv/Linear output (after a following ReLU) and residual addition. Fine-tuning lets the
weights adapt to the rounding (Jacob et al., 2018). The export turns each fake quantizer into a
QuantizeLinear/DequantizeLinear pair, and the weights are stored as INT8, so ONNX Runtime and
OpenVINO run the file with integer kernels.

Weight scales follow each tensor's extremes (MinMax) by default. `weight_range: mse` fixes them after
calibration at the scale that least disturbs the layer's output on calibration data: the weight
error is weighted by each input channel's mean square. Weights whose input channel never fires (a
dead ReLU upstream, which BatchNorm folding can scale up ~300x) then stop setting a per-tensor range.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from compress.errors import StageError, first_line
from compress.stages.device import effective_amp, model_device, moved

QUANTIZED = (nn.Conv2d, nn.Linear)
RELUS = (nn.ReLU, nn.ReLU6, F.relu, torch.relu, F.relu6)
ADDS = (operator.add, torch.add)


class FakeQuant(nn.Module):
    """Per-tensor affine fake quantization of activations with an EMA min/max observer."""

    def __init__(self, signed: bool = False, momentum: float = 0.05, symmetric: bool = False) -> None:
        super().__init__()
        self.qmin, self.qmax = (-128, 127) if signed or symmetric else (0, 255)
        self.symmetric = symmetric  # zero point 0, the range symmetric around it (TensorRT's format)
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))
        self.enabled = False

    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().min(), x.detach().max()
        if torch.isinf(self.low):
            self.low.copy_(low), self.high.copy_(high)
        else:
            self.low.lerp_(low, self.momentum), self.high.lerp_(high, self.momentum)

    def qparams(self) -> tuple[float, int]:
        low, high = min(float(self.low), 0.0), max(float(self.high), 0.0)
        if self.symmetric:
            return max(max(-low, high) / self.qmax, 1e-8), 0
        scale = max((high - low) / (self.qmax - self.qmin), 1e-8)
        zero_point = int(np.clip(round(self.qmin - low / scale), self.qmin, self.qmax))
        return scale, zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.enabled:  # training keeps ranges current; calibration sets them
            self.observe(x)
        if not self.enabled:
            return x
        scale, zero_point = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.qmin, self.qmax)


def weight_scale(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """Symmetric INT8 scales, per output channel or per tensor, as the runtimes store weights."""
    dims = tuple(range(1, weight.dim())) if per_channel else tuple(range(weight.dim()))
    return (weight.detach().abs().amax(dim=dims) / 127.0).clamp(min=1e-8).float()


class WeightFakeQuant:
    """Mixin for Conv2d / Linear: fake-quantized weights; `freeze()` fixes the scales for export."""

    frozen_scale: torch.Tensor | None = None
    per_channel: bool = True

    def quantized_weight(self) -> torch.Tensor:
        scale = self.frozen_scale if self.frozen_scale is not None else weight_scale(self.weight, self.per_channel)
        if not self.per_channel:
            return torch.fake_quantize_per_tensor_affine(self.weight, float(scale), 0, -128, 127)
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
        return torch.fake_quantize_per_channel_affine(self.weight, scale, zero_point, 0, -128, 127)

    def freeze(self) -> None:
        if self.frozen_scale is None:  # `weight_range: mse` fixed the scale at calibration
            self.frozen_scale = weight_scale(self.weight, self.per_channel)


class QuantConv2d(WeightFakeQuant, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(WeightFakeQuant, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def _quantized_copy(module: nn.Module, per_channel: bool) -> nn.Module:
    cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
    new = cls.__new__(cls)
    new.__dict__ = module.__dict__.copy()
    new.per_channel = per_channel
    return new


def freeze(model: nn.Module) -> None:
    """Fix weight scales so the export stores them as constants (and the weights as INT8)."""
    for module in model.modules():
        if isinstance(module, WeightFakeQuant):
            module.freeze()


def prepare(model: nn.Module, signed_activations: bool = False, per_channel: bool = True,
            symmetric: bool = False) -> fx.GraphModule:  # fmt: skip
    """Fold BatchNorm and insert fake quantizers; the result trains like any module."""
    from torch.fx.experimental.optimization import fuse

    try:
        gm = fuse(model.eval())
    except Exception as exc:  # symbolic tracing fails on data-dependent Python control flow
        raise StageError(f"QAT needs a traceable model (torch.fx): {first_line(exc)}",
                         hint="use method: ptq for this model, or remove data-dependent control flow") from None  # fmt: skip
    modules = dict(gm.named_modules())
    quantized: dict[fx.Node, fx.Node] = {}  # tensor -> its fake-quantized version
    count = 0

    def fq_after(node: fx.Node) -> fx.Node:
        nonlocal count
        if node in quantized:
            return quantized[node]
        name = f"fq{count}"
        count += 1
        gm.add_submodule(name, FakeQuant(signed_activations, symmetric=symmetric))
        with gm.graph.inserting_after(node):
            fq = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(fq, delete_user_cb=lambda user: user is not fq)
        quantized[node] = quantized[fq] = fq
        return fq

    for node in list(gm.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, QUANTIZED):
            _swap(gm, node.target, _quantized_copy(module, per_channel))
            source = node.args[0]
            node.replace_input_with(source, fq_after(source) if source not in quantized else quantized[source])
            output = _following_relu(node, modules)
            if not any(user.op == "output" for user in output.users):
                fq_after(output)
        elif node.op == "call_function" and node.target in ADDS:
            fq_after(_following_relu(node, modules))
    gm.graph.lint()
    gm.recompile()
    return gm


def _following_relu(node: fx.Node, modules: dict) -> fx.Node:
    """The ReLU that directly follows `node`, if it is its only user (fused into the kernel)."""
    users = list(node.users)
    if len(users) == 1:
        user = users[0]
        target = modules.get(user.target) if user.op == "call_module" else user.target
        if isinstance(target, RELUS[:2]) or target in RELUS[2:]:
            return user
    return node


def _swap(gm: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, attr, new)


def fake_quantizers(model: nn.Module) -> list[FakeQuant]:
    return [m for m in model.modules() if isinstance(m, FakeQuant)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: list[np.ndarray], task) -> None:
    """Observe activation ranges on calibration data, then switch fake quantization on."""
    model.eval()
    for fq in fake_quantizers(model):
        fq.enabled = False
    device = model_device(model)
    for batch in batches:
        model(*moved(task.inputs(batch), device))
    for fq in fake_quantizers(model):
        fq.enabled = True


def input_weighting(layer: nn.Module, moment: torch.Tensor) -> torch.Tensor:
    """Each weight's input mean square E[x^2], shaped to broadcast against the weight."""
    if isinstance(layer, nn.Linear):
        return moment.reshape(1, -1)
    groups = layer.groups  # weight (out, in / groups, kh, kw): output o reads group o // (out / groups)
    per_group = moment.reshape(groups, -1).repeat_interleave(layer.out_channels // groups, dim=0)
    return per_group[:, :, None, None]


def mse_weight_scale(
    weight: torch.Tensor, weighting: torch.Tensor, per_channel: bool, steps: int = 192
) -> torch.Tensor:
    """The symmetric INT8 scale, out of MinMax's scaled down by up to 2^-12, with the least
    input-weighted squared weight error: E|x (W_q - W)|^2 for inputs with uncorrelated channels."""
    w = weight.detach().float()
    full = weight_scale(w, per_channel)
    dims = tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
    best, best_error = full, None
    for ratio in 2.0 ** (-torch.arange(steps) / (steps / 12)):
        scale = full * ratio
        step = scale.reshape(shape)
        error = (((torch.clamp(torch.round(w / step), -128, 127) * step - w) ** 2) * weighting).sum(dims)
        better = error < best_error if best_error is not None else torch.ones_like(error, dtype=torch.bool)
        best = torch.where(better, scale, best)
        best_error = error if best_error is None else torch.minimum(error, best_error)
    return best


def fix_weight_ranges(model: nn.Module, batches: list[np.ndarray], task) -> None:
    """`weight_range: mse`: fix every weight scale from calibration inputs (see the module docstring)."""
    from compress.stages.activation import InputMoments

    moments = InputMoments()
    moments.collect(model, task, batches)
    for layer in model.modules():
        if isinstance(layer, WeightFakeQuant) and layer in moments.sums:
            moment = moments.sums[layer] / max(moments.counts[layer], 1)
            layer.frozen_scale = mse_weight_scale(layer.weight, input_weighting(layer, moment), layer.per_channel)


def store_int8_weights(path) -> int:
    """Replace QuantizeLinear on constant weights by INT8 initializers; returns how many."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}
    values = {**consts, **init}
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in init and all(i in values for i in node.input[1:]):
            w = numpy_helper.to_array(init[node.input[0]])
            scale = numpy_helper.to_array(values[node.input[1]])
            zp = numpy_helper.to_array(values[node.input[2]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            if scale.ndim:
                shape[axis] = -1
            q = np.clip(
                np.round(w / scale.reshape(shape)) + zp.reshape(shape), np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max
            )
            graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), node.output[0]))
            folded += 1
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    alive = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(alive)
    onnx.save(model, str(path))
    return folded


def run_qat(cfg, artifact, ctx):
    """Fold, insert fake quantizers, calibrate, fine-tune (optionally distilling), export QDQ."""
    from compress.artifact import Artifact, Kind, load_torch
    from compress.errors import StageError
    from compress.report.details import Calibration, Quantization
    from compress.stages.distillation import distillation
    from compress.stages.export import ExportStage, export_onnx
    from compress.stages.quantize.common import calibration_batches, count_quantized_ops, inherited
    from compress.stages.training import fit, processes, training_device

    source = load_torch(artifact)
    if getattr(source, "is_detector", False):
        raise StageError("quantization-aware training does not take detectors yet (its check compares class outputs)",
                         hint=f"use post-training quantization in stage '{cfg.name}' (method: ptq)")  # fmt: skip
    opts, label = cfg.qat, f"{cfg.name} (qat)"
    device = training_device(opts)  # calibration, weight ranges and the teacher run there too
    model = prepare(source, signed_activations=cfg.activations == "int8", per_channel=cfg.per_channel,
                    symmetric=cfg.symmetric).to(device)  # fmt: skip
    batches = calibration_batches(ctx.splits.calibration(cfg.calibration.samples, ctx.seed))
    calibrate(model, batches, ctx.task)
    if opts.weight_range == "mse":
        fix_weight_ranges(model, batches, ctx.task)
    if opts.distill:
        with distillation(opts.distill, opts, model, ctx, device) as (loss, extra):
            history = fit(model, opts, ctx, label, loss, extra)
    else:
        history = fit(model, opts, ctx, label)
    freeze(model)
    model.eval()
    path = ctx.workdir / "model.onnx"
    x = ctx.splits.x_test
    export_onnx(model, x[:2], path, ExportStage(type="export", name=cfg.name, opset=17).settings(model), ctx.task)
    folded = store_int8_weights(path)
    agreement = check_qat_export(model, path, x[2:66], ctx.task)
    ctx.log(f"{cfg.name}: QAT export stores {folded} INT8 weight tensors; top-1 agrees with PyTorch on {agreement:.1%}")
    settings = Quantization(precision="int8", format="onnx-qdq", method="qat", backend="onnxruntime",
                            activations=cfg.activations, weights="int8", per_channel=cfg.per_channel,
                            symmetric=cfg.symmetric, for_targets=cfg.for_ or None, weight_range=opts.weight_range,
                            calibration=Calibration(method="minmax-ema", samples=cfg.calibration.samples),
                            quantized_ops=count_quantized_ops(path), int8_weight_tensors=folded,
                            export_top1_agreement=agreement)  # fmt: skip
    meta = {
        **settings.dump(),
        "history": history,
        "training_device": device,
        "training_amp": effective_amp(device, opts.amp),
        **processes(),
        **({"distilled_from": opts.distill.teacher} if opts.distill else {}),
    }
    return Artifact(Kind.ONNX, path.name, lineage=[*artifact.lineage, cfg.name], meta={**inherited(artifact), **meta})


MIN_AGREEMENT = 0.98


def check_qat_export(model: nn.Module, path, x: np.ndarray, task) -> float:
    """Integer kernels round differently from fake quantization, so compare predictions, not logits."""
    from compress.runtimes import open_session

    with torch.no_grad():
        expected = model(*task.inputs(x)).numpy().argmax(1)
    got = open_session("onnxruntime", path, threads=1).run(task.feeds(x))[0].argmax(1)
    agreement = float((expected == got).mean())
    if agreement < MIN_AGREEMENT:
        raise StageError(f"the QAT export disagrees with the fake-quantized model on {1 - agreement:.1%} of test inputs",
                         hint="an op may be quantized differently by the runtime; try method: ptq")  # fmt: skip
    return agreement
