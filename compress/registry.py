"""Every pluggable component, by kind and name: stages, runtimes, model sources, data sources, tasks.

A component is one module that declares everything about itself (its configuration, its graph
meaning, the optional extra it needs, its implementation); this file only says where each
built-in one lives. Other packages add components through Python entry points in the groups
`compress.stages`, `compress.runtimes`, `compress.models`, `compress.datasets` and `compress.tasks`:

    [project.entry-points."compress.stages"]
    my-stage = "my_package.stage:MyStage"

Entries are import strings resolved on first use, so `import compress` and recipe validation stay
free of torch and of every optional runtime. This module runs on measuring devices too, so it
keeps to Python 3.8 and the standard library.
"""

from __future__ import annotations

import importlib
from typing import Any

KINDS = ("stages", "runtimes", "models", "datasets", "tasks")

BUILTIN: dict[str, dict[str, str]] = {
    "stages": {
        "train": "compress.stages.train:TrainStage",
        "prune": "compress.stages.prune:PruneStage",
        "finetune": "compress.stages.finetune:FinetuneStage",
        "export": "compress.stages.export:ExportStage",
        "quantize": "compress.stages.quantize:QuantizeStage",
        "convert": "compress.stages.convert:ConvertStage",
    },
    "runtimes": {
        "onnxruntime": "compress.runtimes.onnxruntime:OnnxRuntime",
        "openvino": "compress.runtimes.openvino:OpenVINORuntime",
        "tensorrt": "compress.runtimes.tensorrt:TensorRTRuntime",
    },
    "models": {  # model sources, by the prefix of `arch:` (`zoo` also takes bare names)
        "zoo": "compress.models.sources:Zoo",
        "torchvision": "compress.models.sources:Torchvision",
        "timm": "compress.models.sources:Timm",
        "hf": "compress.models.sources:HuggingFace",
    },
    "datasets": {
        "digits": "compress.data.digits:Digits",
        "imagefolder": "compress.data.imagefolder:ImageFolder",
        "npz": "compress.data.npz:Npz",
        "text": "compress.data.text:Text",
        "shapes": "compress.data.shapes:Shapes",
        "coco": "compress.data.coco:Coco",
    },
    "tasks": {
        "classification": "compress.tasks:Classification",
        "embedding": "compress.tasks:Embedding",
        "detection": "compress.detection.task:Detection",
    },
}

_plugins: dict[str, dict[str, str]] = {}


def _entry_points(kind: str) -> dict[str, str]:
    """Components other installed packages declare for `kind` (read once per process)."""
    if kind not in _plugins:
        from importlib import metadata

        group = f"compress.{kind}"
        found = metadata.entry_points()
        points = found.select(group=group) if hasattr(found, "select") else found.get(group, [])
        _plugins[kind] = {ep.name: ep.value for ep in points}
    return _plugins[kind]


def table(kind: str) -> dict[str, str]:
    """Name -> import string of every component of a kind; built-ins win over a plug-in's name."""
    return {**_entry_points(kind), **BUILTIN[kind]}


def names(kind: str) -> list:
    return list(table(kind))


def is_builtin(kind: str, name: str) -> bool:
    return name in BUILTIN[kind]


def resolve(kind: str, name: str) -> Any:
    """Import and return the component registered as `name`. A plug-in that cannot be loaded is a
    one-line error naming it, never a traceback from inside another package."""
    target = table(kind)[name]
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - whatever the plug-in's import raised
        if is_builtin(kind, name):
            raise
        from compress.errors import UsageError, first_line

        raise UsageError(
            f"plug-in {kind[:-1]} '{name}' ({target}) could not be loaded: {first_line(exc)}",
            hint="fix or uninstall the package that declares it (pip show shows which)",
        ) from None


def components(kind: str) -> dict[str, Any]:
    """Every component of a kind, imported (recipe validation needs their configuration models)."""
    return {name: resolve(kind, name) for name in table(kind)}
