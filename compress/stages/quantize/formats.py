"""INT8 formats per target. A quantize stage made `for:` some targets takes the format their
runtime runs well (Runtime.int8_format): U8S8 for ONNX Runtime on x86, symmetric S8S8 with
per-channel weights for TensorRT (its explicit quantization accepts zero point 0 only), NNCF's
OpenVINO IR for OpenVINO. Settled when the recipe loads, so the stage's configuration (and its
cache key) holds the settings it runs with."""

from __future__ import annotations

from typing import Any

# The stage settings each format fixes; the backend is settled separately.
SETTINGS: dict[str, dict[str, Any]] = {
    "u8s8": {"activations": "uint8", "weights": "int8", "symmetric": False},
    "symmetric": {
        "activations": "int8",
        "weights": "int8",
        "symmetric": True,
        "per_channel": True,
        "reduce_range": False,
    },
    "nncf": {},
}
DESCRIBED = {
    "u8s8": "U8S8 INT8 (unsigned activations, signed weights)",
    "symmetric": "symmetric INT8 (zero point 0, per-channel weights)",
    "nncf": "NNCF's INT8 OpenVINO IR",
}

Problems = list[tuple[tuple, str]]


def fit(stage: Any, runtimes: dict[str, type]) -> Problems:
    """Set `stage` up for the targets named ({target name: runtime class}); (field path, problem)
    pairs where a setting given in the recipe contradicts what the targets need."""
    formats = {name: cls.int8_format for name, cls in runtimes.items()}
    if len(set(formats.values())) > 1:
        listed = ", ".join(f"{name}: {DESCRIBED.get(f, f)}" for name, f in formats.items())
        return [(("for",), f"these targets take different INT8 formats ({listed}); use one quantize stage per format")]
    fmt = next(iter(formats.values()))
    names = f"target {', '.join(runtimes)} takes" if len(runtimes) == 1 else f"targets {', '.join(runtimes)} take"
    problems = _backend(stage, fmt, names)
    if stage.method == "int4":  # weight-only: the activation format does not apply
        return problems
    if stage.backend == "modelopt":  # it has its own format settings
        return problems
    for field, value in SETTINGS.get(fmt, {}).items():
        if field in stage.model_fields_set and getattr(stage, field) != value:
            problems.append(((field,), f"{names} {DESCRIBED[fmt]}, so {field} must be {value!r}; "
                                       f"remove '{field}' or leave the target out of 'for'"))  # fmt: skip
        else:
            setattr(stage, field, value)
    return problems


def _backend(stage: Any, fmt: str, names: str) -> Problems:
    if (stage.method == "dynamic" and fmt != "u8s8") or (stage.method == "int4" and fmt == "symmetric"):
        return [(("method",), f"{names} {DESCRIBED[fmt]}, not {stage.method} quantization; use method: ptq")]
    if stage.backend == "nncf" and fmt != "u8s8":
        fits = "openvino" if fmt == "nncf" else "onnxruntime"
        return [(("backend",), f"{names} {DESCRIBED[fmt]}, and backend nncf makes ONNX Runtime's U8S8 QDQ; "
                               f"use backend: {fits}")]  # fmt: skip
    if fmt == "nncf":
        if stage.method in ("ptq", "int4") and "backend" not in stage.model_fields_set:
            stage.backend = "openvino"
            try:
                stage._options_fit_backend()  # the stage's own checks, now for this backend
            except ValueError as exc:
                return [(("for",), f"{names} {DESCRIBED[fmt]} (backend openvino), but {exc}")]
        return []
    if fmt == "symmetric" and "backend" not in stage.model_fields_set and stage.method == "ptq" and _modelopt():
        stage.backend = "modelopt"  # NVIDIA's own placement, preferred for TensorRT when installed
    if stage.backend == "modelopt" and fmt != "symmetric":
        return [(("backend",), f"{names} {DESCRIBED[fmt]}; backend modelopt makes TensorRT's format")]
    if stage.backend == "openvino":
        return [(("backend",), f"{names} {DESCRIBED[fmt]}, and backend openvino makes an OpenVINO IR, which "
                               "it cannot load; use backend: onnxruntime")]  # fmt: skip
    return []


def _modelopt() -> bool:
    import importlib.util

    return importlib.util.find_spec("modelopt") is not None
