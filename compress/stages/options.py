"""Settings shared by several stages: optimisation (train, finetune, QAT) and distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.config import Strict


class TrainingOptions(Strict):
    """Optimisation settings shared by `train`, `finetune` and quantization-aware training."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    schedule: Literal["cosine", "constant"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: bool = Field(False, description="bfloat16 autocast where the CPU supports it")


class FeaturePair(Strict):
    student: str = Field(description="module name in the student, e.g. layers.2")
    teacher: str = Field(description="module name in the teacher")


class Distill(Strict):
    """Knowledge distillation (Hinton et al., 2015), optionally with feature matching (FitNets)."""

    teacher: str | None = Field(None, description="stage name, 'teacher' or 'model'; default: the model before pruning")
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation loss; 1 - alpha for cross-entropy")
    features: list[FeaturePair] = Field(default_factory=list)
    feature_weight: float = Field(1.0, ge=0)
