"""Typed contracts for what a stage records about a variant and a report reads back.

Stages write these into `Variant.details` (as plain JSON, the keys unchanged), and every reader
(report tables, diagnosis, warnings) parses them through the same models, so a key renamed in one
place fails loudly everywhere. `dump()` keeps only the fields a writer set.
"""

from __future__ import annotations

from typing import Any

from compress.config import Strict


class Details(Strict):
    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Pruning(Details):
    importance: str
    scope: str
    round_to: int | None
    steps: int
    heads: list[list[int]] | None = None  # [before, after] per attention layer
    attention: list[dict] | None = None  # per attention class: layout, layers, outcome (pruned by head or why not)
    ratios: dict[str, float] | None = None  # per group (its first layer), under scope: sensitivity
    sensitivity: dict[str, list[list[float]]] | None = None  # per group: [ratio, loss increase, saving]
    sensitivity_cost: str | None = None  # the saving's unit: macs, or latency (ms from a per-layer profile)
    reconstruction: dict | None = None  # reconstruct: layers refitted, relative output error before / after
    blocks: dict | None = None  # blocks_ratio: the stack, its block count, indices removed, loss before / after each
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


class Calibration(Details):
    method: str
    samples: int


class Quantization(Details):
    """Quantization settings every backend records, flat in `details` beside the other keys."""

    precision: str
    format: str
    method: str
    backend: str
    activations: str | None = None
    weights: str | None = None
    per_channel: bool | None = None
    symmetric: bool | None = None  # activations with zero point 0 (what TensorRT runs)
    for_targets: list[str] | None = None  # the targets whose INT8 format it was made in (`for:`)
    reduce_range: bool | None = None
    reduce_range_reason: str | None = None
    calibration: Calibration | None = None
    quantized_ops: int | None = None
    float_nodes: list[str] | None = None
    float_ops: dict[str, int] | None = None  # ops left in float by design (NMS, RoIAlign, ...), counted by type
    # NNCF (OpenVINO)
    preset: str | None = None
    model_type: str | None = None
    bias_correction: bool | None = None
    quantized_layers: int | None = None
    float_layers: list[str] | None = None
    max_accuracy_drop: float | None = None
    drop_type: str | None = None
    # quantization-aware training
    weight_range: str | None = None
    int8_weight_tensors: int | None = None
    export_top1_agreement: float | None = None

    @classmethod
    def of(cls, details: dict[str, Any]) -> Quantization | None:
        """The quantization settings in a variant's details, or None for a float variant."""
        if "method" not in details:
            return None
        return cls.model_validate({k: details[k] for k in cls.model_fields if k in details})


class ControlStep(Details):
    """One step of an accuracy-aware search: a layer sent to float, or tried back in INT8."""

    float_layer: str | None = None
    int8_layer: str | None = None
    sensitivity: float | None = None
    val_accuracy: float
    p50_ms: float | None = None
    kept: bool | None = None
    label: str | None = None


class AccuracyControl(Details):
    fp32_val_accuracy: float
    budget_points: float
    met: bool
    steps: list[ControlStep]
    float_nodes: list[str]
    ranked_by: str | None = None
    val_examples: int | None = None  # the validation split the budget was judged on

    @classmethod
    def of(cls, details: dict[str, Any]) -> AccuracyControl | None:
        found = details.get("accuracy_control")
        return cls.model_validate(found) if found else None
