"""Build the recipe's model from a registered model source (sources.py) or the user's own Python
file, plus a checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compress import registry
from compress.errors import StageError
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


def build_model(spec: ModelSpec, base_dir: Path, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Create the model described by `spec` and load its checkpoint, if any."""
    if spec.python:
        model = _from_python(spec, base_dir)
    else:
        source, name = model_source(spec.arch)
        model = source.build(name, spec.options, InputShape(in_channels, num_classes, image_size, base_dir))
    if spec.checkpoint:
        load_checkpoint(model, base_dir / Path(spec.checkpoint).expanduser())
    return model


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
    """Load a state_dict saved with torch.save; `weights_only=True` never runs pickled code."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise StageError(
            f"cannot load checkpoint {path}: {exc}", hint="save it with torch.save(model.state_dict())"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise StageError(f"checkpoint {path} does not fit the model: {' '.join(first)}",
                         hint="check the model's arch and options match the checkpoint") from None  # fmt: skip


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
