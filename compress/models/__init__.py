"""Build the recipe's model: zoo, torchvision or the user's own Python file, plus a checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compress import registry
from compress.errors import StageError

if TYPE_CHECKING:
    from torch import nn

    from compress.recipe import ModelSpec


def build_model(spec: ModelSpec, base_dir: Path, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Create the model described by `spec` and load its checkpoint, if any."""
    if spec.python:
        model = _from_python(spec, base_dir)
    elif spec.arch.startswith("hf:"):
        from compress.models.hf import load_hf

        model = load_hf(spec.arch[3:], base_dir, num_classes, **spec.options)
    elif spec.arch.startswith("timm:"):
        import timm

        model = timm.create_model(spec.arch[5:], pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                  **({"img_size": image_size} if "vit" in spec.arch or "deit" in spec.arch else {}),
                                  **spec.options)  # fmt: skip
    elif spec.arch.startswith("torchvision:"):
        model = _from_torchvision(spec.arch.split(":", 1)[1], in_channels, num_classes, spec.options)
    else:
        builder = registry.resolve(registry.MODELS, spec.arch)
        model = builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **spec.options)
    if spec.checkpoint:
        load_checkpoint(model, base_dir / spec.checkpoint)
    return model


def _from_python(spec: ModelSpec, base_dir: Path) -> nn.Module:
    file, _, func = spec.python.rpartition(":")
    path = (base_dir / file).resolve()
    # A stable module name lets a saved model be unpickled in another process.
    name = f"compress_user_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, func):
        raise StageError(f"{path} has no function '{func}'", hint="name a function that returns an nn.Module")
    return getattr(module, func)(**spec.options)


def _from_torchvision(name: str, in_channels: int, num_classes: int, options: dict) -> nn.Module:
    import torchvision
    from torch import nn

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except ValueError as exc:
        known = ", ".join(torchvision.models.list_models()[:12])
        raise StageError(f"torchvision has no model '{name}' ({exc})", hint=f"for example: {known}, ...") from None
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, nn)
    return model


def _adapt_first_conv(model, in_channels: int, nn) -> None:
    """torchvision models expect RGB; swap the first convolution for one with `in_channels`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, module.bias is not None)  # fmt: skip
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


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
