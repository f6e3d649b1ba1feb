"""`ort-optimize`: save ONNX Runtime's offline-optimized graph (constant folding, fusions) as a variant."""

from __future__ import annotations

from typing import ClassVar, Literal

from compress.artifact import Artifact, Kind
from compress.stages import Stage, StageContext


class OrtOptimize(Stage):
    type: Literal["ort-optimize"]
    level: Literal["basic", "extended", "all"] = "extended"
    default_variant: ClassVar[str | None] = "optimized"

    @property
    def consumes(self) -> Kind:
        return Kind.ONNX

    @property
    def produces(self) -> Kind:
        return Kind.ONNX

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        import onnxruntime as ort

        levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.level]
        out = ctx.workdir / "model.onnx"
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        meta = {**artifact.meta, "format": "onnx", "precision": "fp32", "ort_optimization": self.level}
        return Artifact(Kind.ONNX, out.name, lineage=[*artifact.lineage, self.name], meta=meta)
