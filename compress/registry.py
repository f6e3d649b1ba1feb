"""Name -> implementation maps for stages, runtimes, models and data sources.

Entries are import strings resolved on first use, so `import compress` and recipe validation stay
free of torch and of every optional runtime. Adding a component means adding one line here.
"""

from __future__ import annotations

import importlib
from typing import Any

STAGES = {
    "train": "compress.stages.train:run",
    "prune": "compress.stages.prune:run",
    "finetune": "compress.stages.finetune:run",
    "export": "compress.stages.export:run",
    "quantize": "compress.stages.quantize:run",
}

RUNTIMES = {
    "onnxruntime": "compress.runtimes.onnxruntime:OnnxRuntime",
    "openvino": "compress.runtimes.openvino:OpenVINORuntime",
    "tensorrt": "compress.runtimes.tensorrt:TensorRTRuntime",
}

MODELS = {
    "resnet": "compress.models.zoo:resnet",
    "mobilenetv2": "compress.models.zoo:mobilenetv2",
    "vit": "compress.models.zoo:vit",
}

DATASETS = {
    "digits": "compress.data.digits:load",
    "imagefolder": "compress.data.imagefolder:load",
    "npz": "compress.data.npz:load",
    "text": "compress.data.text:load",
}


def resolve(table: dict[str, str], name: str) -> Any:
    """Import and return the object registered under `name`."""
    module_name, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
