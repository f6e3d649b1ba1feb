"""Settings shared by several stages: optimisation (train, finetune, QAT) and distillation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from compress.config import Strict
from compress.stages.augment import AugmentSetting

DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


class TrainingOptions(Strict):
    """Optimisation settings shared by `train`, `finetune` and quantization-aware training."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "cosine",
        description="cosine decay from lr; onecycle: warm up to lr over the first 30 % of steps, then "
        "anneal (Smith's one-cycle, often the better recovery after pruning); constant",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    freeze: list[str] | Literal["auto"] = Field(
        default_factory=list,
        description="modules whose weights stay as they are: module names (a name holds the modules under it) "
        "or classes (e.g. LayerNorm); auto: a text model's token table",
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] | Literal["auto"] | None = Field(
        "auto",
        description="every dropout layer's probability while this stage trains (the saved model keeps its own): "
        "a number, null (the model's own) or auto (0 while distilling, else the model's own)",
    )
    device: str = Field("auto", pattern=DEVICE_PATTERN,
                        description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")  # fmt: skip
    amp: Literal["bf16", "fp16", "auto"] | None = Field(
        None,
        description="mixed precision: bf16 (CUDA, or CPUs with AVX-512 BF16/AMX), fp16 (CUDA), auto (bf16 where "
        "native, else fp32); null: fp32",
    )

    augment: AugmentSetting = Field(
        "auto",
        description="auto (the data source's default: imagefolder crops and flips, others none), none, "
        "or {shift, crop_scale, flip}",
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _legacy_amp(cls, value: object) -> object:
        """`amp: true` (bfloat16 autocast) from before fp16 existed still reads as bf16."""
        return {True: "bf16", False: None}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fp16_needs_cuda(self) -> TrainingOptions:
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError("amp: fp16 needs CUDA; on the CPU use amp: bf16 or null")
        return self


# Fine-tuning a pruned model keeps its token table: pruning leaves it whole, and training it steps
# the optimizer over every row of the vocabulary for the few hundred tokens a batch holds
# (MiniLM's 11.7 M-parameter table made a distillation step 1.9x slower).
def recovery_freeze():
    return Field("auto", description="as in train; default: auto")


class FeaturePair(Strict):
    student: str = Field(description="module name in the student, e.g. layers.2")
    teacher: str = Field(description="module name in the teacher")


class Distill(Strict):
    """Knowledge distillation (Hinton et al., 2015), optionally with feature matching (FitNets)."""

    teacher: str | None = Field(None, description="stage name, 'teacher' or 'model'; default: the model before pruning")
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation loss; 1 - alpha for cross-entropy")
    features: list[FeaturePair] | Literal["auto"] = Field(
        default_factory=list,
        description="layer pairs whose outputs the student matches, or auto: a student shaped like its teacher "
        "(pruned from it) matches its blocks at each resolution",
    )
    feature_weight: float = Field(1.0, ge=0)
