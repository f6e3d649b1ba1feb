"""`quantize`: INT8 by post-training quantization (ONNX Runtime QDQ, NNCF to OpenVINO IR or NNCF to
QDQ ONNX), ONNX Runtime dynamic quantization, or quantization-aware training; INT4 weight-only compression. Each backend is a module of
this package; this one holds the stage's configuration and picks the backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from compress.artifact import Kind
from compress.config import Strict
from compress.stages import Stage, StageContext
from compress.stages.options import Distill, TrainingOptions, recovery_freeze

if TYPE_CHECKING:
    from compress.artifact import Artifact


class Calibration(Strict):
    method: Literal["minmax", "entropy", "percentile", "mean_minmax"] = "minmax"
    samples: int = Field(256, ge=1, le=100_000, description="drawn from the training split")
    percentile: float = Field(99.999, gt=90, le=100, description="percentile method only")


class QatOptions(TrainingOptions):
    """Fine-tuning with fake quantization (method: qat)."""

    epochs: int = Field(3, ge=1, le=10_000)
    lr: float = Field(1e-4, gt=0, le=10)
    freeze: list[str] | Literal["auto"] = recovery_freeze()
    weight_range: Literal["minmax", "mse"] = Field(
        "minmax",
        description="minmax: scales follow the weights' extremes; mse: fixed after calibration at the "
        "least expected squared output error on calibration data",
    )
    distill: Distill | None = None


ORT_ONLY = ("activations", "weights", "reduce_range", "symmetric")
OPENVINO_ONLY = ("preset", "bias_correction")


class QuantizeStage(Stage):
    """INT8 quantization: post-training (ONNX Runtime QDQ, or NNCF to OpenVINO IR or QDQ ONNX) or
    quantization-aware."""

    type: Literal["quantize"]
    method: Literal["ptq", "dynamic", "qat", "int4"] = "ptq"
    backend: Literal["onnxruntime", "openvino", "nncf", "modelopt"] = Field(
        "onnxruntime",
        description="onnxruntime (QDQ ONNX), openvino (NNCF, OpenVINO IR), nncf (NNCF on the ONNX graph, U8S8 "
        "QDQ ONNX for ONNX Runtime) or modelopt (NVIDIA's ONNX PTQ for TensorRT)",
    )
    calibration: Calibration = Field(default_factory=Calibration)
    per_channel: bool = True
    for_: list[str] = Field(
        default_factory=list,
        alias="for",
        description="targets this model is for: it takes their runtime's INT8 format (ONNX Runtime: U8S8; "
        "TensorRT: symmetric, per-channel weights; OpenVINO: NNCF's IR)",
    )
    activations: Literal["uint8", "int8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    symmetric: bool = Field(
        False, description="int8 activations with zero point 0 (what TensorRT runs); int4: symmetric weights"
    )
    group_size: int = Field(128, ge=16, le=4096, description="int4: weights that share one scale")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: on for CPUs without VNNI")
    preset: Literal["symmetric", "mixed"] | None = Field(None, description="NNCF preset (openvino)")
    bias_correction: bool | None = Field(None, description="NNCF fast bias correction (openvino); default on")
    model_type: Literal["cnn", "transformer"] = "cnn"
    ignore: list[str] = Field(default_factory=list, description="node names, op types or re: patterns kept in float")
    max_accuracy_drop: float | None = Field(None, gt=0, description="accuracy-aware PTQ budget, in points or relative")
    drop_type: Literal["absolute", "relative"] = "absolute"
    qat: QatOptions | None = Field(None, description="training settings for method: qat")
    fallback: QatOptions | None = Field(
        None,
        description="QAT settings, run when accuracy-aware PTQ misses max_accuracy_drop or keeps layers in "
        "float; its model replaces PTQ's when it meets the budget on validation with every layer in INT8",
    )
    fallback_from: str | None = Field(
        None, description="the PyTorch stage the fallback QAT starts from; default: the one exported for this stage"
    )
    default_variant: ClassVar[str | None] = "int8"

    @model_validator(mode="after")
    def _options_fit_backend(self) -> QuantizeStage:
        other = {"onnxruntime": OPENVINO_ONLY, "openvino": ORT_ONLY, "nncf": ORT_ONLY,
                 "modelopt": ORT_ONLY + OPENVINO_ONLY}[self.backend]  # fmt: skip
        given = [k for k in other if k in self.model_fields_set and not (k == "symmetric" and self.method == "int4")]
        if given:
            raise ValueError(f"{', '.join(given)} do(es) not apply to backend '{self.backend}'")
        if self.backend == "nncf" and (self.method != "ptq" or self.max_accuracy_drop is not None):
            raise ValueError("backend 'nncf' does method: ptq without max_accuracy_drop; for accuracy control use "
                             "backend onnxruntime or openvino")  # fmt: skip
        if self.backend in ("openvino", "nncf") and self.calibration.method == "entropy":
            raise ValueError("calibration.method 'entropy' is ONNX Runtime's; use minmax, mean_minmax or percentile")
        if self.backend == "modelopt" and (
            self.method != "ptq" or self.calibration.method not in ("minmax", "entropy")
        ):
            raise ValueError("backend 'modelopt' does method: ptq with calibration.method minmax or entropy")
        if self.method == "qat" and self.backend != "onnxruntime":
            raise ValueError(
                "method 'qat' exports a QDQ ONNX file (runs in ONNX Runtime and OpenVINO); use backend onnxruntime"
            )
        if self.qat is not None and self.method != "qat":
            raise ValueError("'qat' settings need method: qat")
        if self.method != "ptq" and self.max_accuracy_drop is not None:
            raise ValueError("max_accuracy_drop applies to method: ptq")
        if (self.fallback or self.fallback_from) and (self.max_accuracy_drop is None or self.backend != "onnxruntime"):
            raise ValueError(
                "fallback (QAT when PTQ misses its budget) needs max_accuracy_drop with backend onnxruntime"
            )
        if self.method == "dynamic" and self.backend != "onnxruntime":
            raise ValueError("method 'dynamic' is ONNX Runtime's dynamic quantization; use backend onnxruntime")
        if "group_size" in self.model_fields_set and self.method != "int4":
            raise ValueError("group_size applies to method: int4")
        if self.method == "int4" and self.model_fields_set & {"activations", "weights", "reduce_range", "calibration"}:
            raise ValueError("method int4 compresses weights only: leave out activations, weights, reduce_range "
                             "and calibration")  # fmt: skip
        if self.symmetric and self.activations != "int8" and self.method != "int4":
            raise ValueError("symmetric activations are int8 (zero point 0); set activations: int8")
        if self.method == "int4" and self.variant is None:
            self.variant = self.name or "int4"  # not the INT8 default name
        if self.method == "qat" and self.qat is None:
            self.qat = QatOptions()
        return self

    @property
    def consumes(self) -> Kind:
        return Kind.TORCH if self.method == "qat" else Kind.ONNX

    @property
    def produces(self) -> Kind:
        return Kind.OPENVINO if self.backend == "openvino" else Kind.ONNX

    def distillation(self) -> tuple[Distill, tuple[str, ...]] | None:
        found = self.training()
        return (found[0].distill, (*found[1], "distill")) if found and found[0].distill else None

    def training(self) -> tuple[QatOptions, tuple[str, ...]] | None:
        return (self.qat, ("qat",)) if self.qat else (self.fallback, ("fallback",)) if self.fallback else None

    def references(self) -> list[str]:
        return [*super().references(), *([self.fallback_from] if self.fallback and self.fallback_from else [])]

    def targets_named(self) -> list[str]:
        return self.for_

    def fit_targets(self, runtimes: dict[str, type]) -> list[tuple[tuple, str]]:
        from compress.stages.quantize.formats import fit

        return fit(self, runtimes)

    def requires(self) -> dict[str, str]:
        if self.backend == "modelopt":
            return {"modelopt": "'compress-edge[modelopt]'"}
        extra = "'compress-edge[openvino]'"
        return {"openvino": {"openvino": extra, "nncf": extra}, "nncf": {"nncf": extra}}.get(self.backend, {})

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        if self.method == "int4":
            from compress.stages.quantize.weights import run_int4

            return run_int4(self, artifact, ctx)
        if self.method == "qat":
            from compress.stages.quantize.qat import run_qat

            return run_qat(self, artifact, ctx)
        if self.backend == "modelopt":
            from compress.stages.quantize.modelopt import run_modelopt

            return run_modelopt(self, artifact, ctx)
        if self.backend == "nncf":
            from compress.stages.quantize.nncf_onnx import run_nncf_onnx

            return run_nncf_onnx(self, artifact, ctx)
        if self.backend == "openvino":
            from compress.stages.quantize.openvino import run_openvino

            return run_openvino(self, artifact, ctx)
        from compress.stages.quantize.onnxruntime import run_dynamic, run_onnxruntime

        return (run_dynamic if self.method == "dynamic" else run_onnxruntime)(self, artifact, ctx)
