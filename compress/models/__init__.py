"""Build the recipe's model from a registered model source (sources.py) or the user's own Python
file, plus a checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from compress import registry
from compress.errors import StageError, UsageError, first_line
from compress.models.sources import InputShape, ModelSource

if TYPE_CHECKING:
    from torch import nn

    from compress.recipe.schema import ModelSpec


def model_source(arch: str) -> tuple[ModelSource | None, str]:
    """(source, name within it) for an `arch:` value: `prefix:name`, or a bare name a source lists."""
    prefix, sep, rest = arch.partition(":")
    if sep and prefix in registry.names("models"):
        return registry.resolve("models", prefix)(), rest
    for key in registry.names("models"):
        source = registry.resolve("models", key)()
        if arch in source.names():
            return source, arch
    return (registry.resolve("models", "zoo")(), arch) if not sep else (None, arch)


def build_model(spec: ModelSpec, base_dir: Path, in_channels: int, num_classes: int, image_size: int,
                log: Callable[[str], None] = print, normalize: tuple[list, list] | None = None) -> nn.Module:  # fmt: skip
    """Create the model described by `spec`, then load its weights and its checkpoint, if any.
    `normalize` is the data's (mean, std), for models that undo it (torchvision detectors)."""
    if spec.python:
        model = _from_python(spec, base_dir)
    else:
        source, name = model_source(spec.arch)
        shape = InputShape(in_channels, num_classes, image_size, base_dir, *(normalize or ()))
        model = source.build(name, spec.options, shape)
    if spec.weights:
        from compress.models.weights import load_weights

        load_weights(model, weights_file(spec, base_dir), log)
    if spec.checkpoint:
        load_checkpoint(model, base_dir / Path(spec.checkpoint).expanduser())
    return model


def weights_file(spec: ModelSpec, base_dir: Path) -> Path:
    """The local file of `spec.weights` (downloaded first only with allow_download); UsageError if missing."""
    from compress.models.weights import weights_path

    prefix = spec.arch.partition(":")[0] if spec.arch and ":" in spec.arch else ""
    name = spec.arch.partition(":")[2] if prefix else (spec.arch or "")
    return weights_path(prefix, name, spec.weights, base_dir, spec.allow_download)


def weights_inputs(spec: ModelSpec, base_dir: Path) -> list[Path]:
    """The weights file building reads, for the cache key; none when it is missing (building says so)."""
    if not spec.weights:
        return []
    try:
        return [weights_file(spec.model_copy(update={"allow_download": False}), base_dir)]
    except UsageError:
        return []


def _from_python(spec: ModelSpec, base_dir: Path) -> nn.Module:
    file, _, func = spec.python.rpartition(":")
    path = (base_dir / Path(file).expanduser()).resolve()
    # A stable module name lets a saved model be unpickled in another process.
    name = f"compress_user_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, func):
        raise StageError(f"{path} has no function '{func}'", hint="name a function that returns an nn.Module")
    return getattr(module, func)(**spec.options)


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a state_dict saved with torch.save; `weights_only=True` never runs pickled code. Every
    failure is one line: the library's reason, or the first key whose shape or presence differs."""
    import torch

    hint = "save it with torch.save(model.state_dict()) from a model built with the same arch and options"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise UsageError(f"cannot load checkpoint {path}: {_load_reason(exc)}", hint=hint) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise UsageError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict", hint=hint)
    problem = state_dict_mismatch(model.state_dict(), state)
    try:
        if problem is None:
            model.load_state_dict(state)
    except Exception as exc:  # e.g. values that are not tensors
        problem = first_line(exc)
    if problem:
        raise UsageError(f"checkpoint {path} does not fit the model: {problem}", hint=hint) from None


def _load_reason(exc: Exception) -> str:
    """torch's first line, or for a refused pickle the line that says what was refused."""
    text = str(exc)
    if "Weights only load failed" in text and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return f"not a plain state_dict; loading without running code refused it ({detail[0] if detail else '?'})"
    return first_line(exc)


def state_dict_mismatch(expected: Mapping, got: Mapping) -> str | None:
    """The first key whose shape differs (both shapes), else the keys missing or unexpected; None when they fit."""
    for key, value in expected.items():
        other = got.get(key)
        if hasattr(value, "shape") and hasattr(other, "shape") and tuple(value.shape) != tuple(other.shape):
            return f"{key} has shape {_shape(other)} in the checkpoint but {_shape(value)} in the model"
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    parts = []
    if missing:
        parts.append(f"{_keys(len(missing))} missing from the checkpoint ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    return "; ".join(parts) or None


def _shape(tensor) -> str:
    return f"({', '.join(str(d) for d in tensor.shape)})"


def _keys(count: int) -> str:
    return f"{count} key{'s' if count != 1 else ''}"


def _first(keys: list) -> str:
    return f"{keys[0]}, ..." if len(keys) > 1 else str(keys[0])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
