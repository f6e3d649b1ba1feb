"""`finetune`: recover accuracy after pruning, optionally distilling from a teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from compress.stages import Stage, StageContext
from compress.stages.options import Distill, TrainingOptions, recovery_freeze

if TYPE_CHECKING:
    from compress.artifact import Artifact


class FinetuneStage(Stage, TrainingOptions):
    """Fine-tune the current model, with distillation from a teacher when `distill` is set."""

    type: Literal["finetune"]
    distill: Distill | None = None
    freeze: list[str] | Literal["auto"] = recovery_freeze()

    def distillation(self) -> tuple[Distill, tuple[str, ...]] | None:
        return (self.distill, ("distill",)) if self.distill else None

    def training(self) -> tuple[TrainingOptions, tuple[str, ...]]:
        return self, ()

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        from compress.artifact import load_torch
        from compress.stages.distillation import distillation
        from compress.stages.training import fit, save_trained, training_device

        model = load_torch(artifact)
        if self.distill is None:
            return save_trained(model, self, artifact, ctx, fit(model, self, ctx, self.name))
        device = training_device(self)
        with distillation(self.distill, self, model, ctx, device) as (loss, extra_params):
            history = fit(model, self, ctx, self.name, loss, extra_params)
        return save_trained(model, self, artifact, ctx, history, distilled_from=self.distill.teacher)
