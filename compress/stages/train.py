"""`train`: supervised training with AdamW or SGD, a cosine schedule, and best-on-val selection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from compress.stages import Stage, StageContext
from compress.stages.options import TrainingOptions

if TYPE_CHECKING:
    from compress.artifact import Artifact


class TrainStage(Stage, TrainingOptions):
    """Train the model from its initial weights (random or checkpoint); keep the best on val."""

    type: Literal["train"]

    def training(self) -> tuple[TrainingOptions, tuple[str, ...]]:
        return self, ()

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        from compress.artifact import load_torch
        from compress.stages.training import fit, save_trained

        model = load_torch(artifact)
        return save_trained(model, self, artifact, ctx, fit(model, self, ctx, self.name))
