"""`prune`: structured channel pruning of dependency groups with torch-pruning (see pruning.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from compress.config import Strict
from compress.stages import Stage, StageContext

if TYPE_CHECKING:
    from compress.artifact import Artifact


class AttentionSpec(Strict):
    """A user's attention layer, by class name: which Linear is the fused qkv (or which are q, k and v),
    which attribute holds the head count and, optionally, which holds the head size."""

    module: str = Field(description="class name of the attention layer, e.g. MyAttention")
    qkv: str | None = Field(None, description="attribute of the fused query/key/value Linear (3 x heads x head size)")
    q: str | None = Field(None, description="attribute of the query Linear (with k and v, instead of qkv)")
    k: str | None = Field(None, description="attribute of the key Linear")
    v: str | None = Field(None, description="attribute of the value Linear")
    heads: str = Field(description="attribute holding the head count, rewritten after pruning")
    head_dim: str | None = Field(None, description="attribute holding the head size, rewritten after pruning")

    @model_validator(mode="after")
    def _one_layout(self) -> AttentionSpec:
        separate = [n for n in ("q", "k", "v") if getattr(self, n)]
        if self.qkv and separate:
            raise ValueError(f"give qkv (one fused Linear) or q, k and v, not both (got qkv and {', '.join(separate)})")
        if not self.qkv and len(separate) != 3:
            raise ValueError("give qkv (one fused Linear) or all of q, k and v")
        return self


class PruneStage(Stage):
    """Structured channel pruning of dependency groups with torch-pruning (DepGraph, Fang et al., 2023)."""

    type: Literal["prune"]
    importance: Literal["l1", "l2", "taylor", "bn_scale", "activation"] = "l2"
    ratio: float | None = Field(None, gt=0, lt=1, description="share of channels removed per group")
    macs_reduction: float | None = Field(None, gt=1, le=1000, description="prune until MACs shrink this many times")
    params_reduction: float | None = Field(
        None, gt=1, le=1000, description="prune until parameters shrink this many times"
    )
    scope: Literal["uniform", "global", "sensitivity"] = Field(
        "uniform",
        description="uniform: the ratio per group; global: ranked across groups; sensitivity: per-group "
        "ratios from each group's measured loss sensitivity, removing as many MACs as uniform",
    )
    sensitivity_batches: int = Field(4, ge=1, le=1000, description="batches of 64 examples measuring sensitivity")
    sensitivity_cost: Literal["macs", "latency"] = Field(
        "macs",
        description="what the sensitivity ratios must save as uniform does: MACs, or time per layer "
        "measured in ONNX Runtime on this machine",
    )
    steps: int = Field(1, ge=1, le=100, description="iterative steps to reach a ratio")
    max_steps: int = Field(40, ge=2, le=1000, description="resolution when pruning to a target reduction")
    ignore: list[str] = Field(default_factory=list, description="module names, class names or re: patterns left whole")
    heads_ratio: float | None = Field(None, ge=0, lt=1, description="share of attention heads removed (Transformers)")
    embedding: bool = Field(False, description="also prune a Transformer's embedding (residual) width")
    blocks_ratio: float | None = Field(
        None, gt=0, lt=1, description="share of a Transformer's blocks removed whole, the least needed first"
    )
    blocks_batches: int = Field(4, ge=1, le=1000, description="batches of 64 examples measuring each block's need")
    attention: list[AttentionSpec] = Field(
        default_factory=list, description="attention layers of the model's own classes, for head pruning"
    )
    round_to: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] | None = Field(
        8, description="keep channel counts multiples of this; auto: what the recipe's targets prefer"
    )
    reconstruct: bool = Field(
        False,
        description="refit each Linear layer that lost inputs to its unpruned outputs on training batches "
        "(least squares; activation_batches of them)",
    )
    taylor_batches: int = Field(8, ge=1, le=10_000, description="batches of gradients for taylor importance")
    activation_batches: int = Field(
        8, ge=1, le=10_000, description="batches of 64 examples for activation importance and reconstruct"
    )

    @model_validator(mode="after")
    def _one_goal(self) -> PruneStage:
        goals = [g for g in ("ratio", "macs_reduction", "params_reduction") if getattr(self, g) is not None]
        if len(goals) > 1:
            raise ValueError(f"give one of ratio, macs_reduction or params_reduction, not {' and '.join(goals)}")
        if not goals:
            self.ratio = 0.5
        if self.scope == "sensitivity" and self.ratio is None:
            raise ValueError("scope: sensitivity sets per-group ratios around `ratio`; give ratio, not a reduction")
        return self

    reshapes: ClassVar[bool] = True

    @property
    def rounding(self) -> int | None:
        """round_to as a number: `auto` is settled from the targets when the recipe loads, 8 elsewhere."""
        return 8 if self.round_to == "auto" else self.round_to

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        from compress.stages.pruning import prune

        return prune(self, artifact, ctx)
