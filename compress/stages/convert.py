"""`convert`: a floating-point precision as a variant of its own, measured beside fp32 and INT8.

fp16 stores the ONNX file in half precision with ONNX Runtime's float16 converter (inputs and
outputs kept fp32 unless asked), checked against the fp32 file in ONNX Runtime: what TensorRT and
GPUs run fast, at half the size. bf16 keeps the file as it is and asks the runtime to compute in
bfloat16 (runtimes.base.COMPUTED): OpenVINO on CPUs with AVX-512 BF16 or AMX, TensorRT; runtimes
without bf16 kernels (ONNX Runtime on the CPU) do not measure it.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, model_validator

from compress.artifact import Kind
from compress.errors import StageError, first_line
from compress.stages import Stage, StageContext
from compress.stages.export import ExportCheck

if TYPE_CHECKING:
    from compress.artifact import Artifact


class Fp16Check(ExportCheck):
    atol: float = Field(0.02, gt=0)
    rtol: float = Field(0.02, ge=0)


class ConvertStage(Stage):
    """An exported model in another floating-point precision (fp16 file, or bf16 compute)."""

    type: Literal["convert"]
    precision: Literal["fp16", "bf16"]
    keep_io_types: bool = Field(True, description="fp16: inputs and outputs stay fp32 (no cast in the caller)")
    check: Fp16Check = Field(default_factory=Fp16Check)

    @model_validator(mode="after")
    def _variant(self) -> ConvertStage:
        if self.variant is None:
            self.variant = self.precision if self.name in (None, "convert") else self.name
        return self

    @property
    def consumes(self) -> Kind:
        return Kind.ONNX

    @property
    def produces(self) -> Kind:
        return Kind.ONNX

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        from compress.artifact import Artifact
        from compress.stages.quantize.common import inherited

        out = ctx.workdir / "model.onnx"
        meta = {**inherited(artifact), "precision": self.precision, "format": f"onnx-{self.precision}"}
        if self.precision == "bf16":
            shutil.copyfile(artifact.path, out)  # the runtime computes in bf16; the file stays fp32
            ctx.log(f"{self.name}: bf16 is computed by the runtime (OpenVINO, TensorRT); the file stays fp32")
        else:
            to_fp16(artifact.path, out, self.keep_io_types)
            dynamic = artifact.meta.get("dynamic_batch", True)
            meta["fp16_max_abs_diff"] = check_fp16(artifact.path, out, ctx, self, dynamic)
        return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, self.name], meta=meta)


def to_fp16(source, out, keep_io_types: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types)
    except Exception as exc:  # the converter raises bare exceptions on graphs it cannot handle
        raise StageError(f"fp16 conversion failed: {first_line(exc)}", hint="measure the fp32 model instead") from None
    onnx.save(model, str(out))


def check_fp16(source, out, ctx: StageContext, cfg: ConvertStage, dynamic: bool) -> float:
    """Compare the fp16 file's outputs with the fp32 file's in ONNX Runtime on test inputs; refuse
    one that differs beyond the tolerances (fp16 overflows to inf above 65504)."""
    from compress.runtimes import open_session

    x = ctx.splits.x_test[: cfg.check.samples]
    batches = [x] if dynamic else [row[None] for row in x]
    expected, got = ([open_session("onnxruntime", p).run(ctx.task.feeds(b))[0] for b in batches] for p in (source, out))
    ok, diff, compared = ctx.task.parity(np.concatenate(expected), np.concatenate(got), cfg.check.atol, cfg.check.rtol)
    if not ok:
        raise StageError(f"the fp16 model differs from fp32 ({compared}): max |diff| {diff:.3e}",
                         hint=f"keep fp32, or raise check.atol in stage '{cfg.name}' knowingly")  # fmt: skip
    ctx.log(f"{cfg.name}: fp16 matches fp32 on {compared} (max |diff| {diff:.2e})")
    return diff
