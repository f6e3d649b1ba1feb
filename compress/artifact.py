"""What flows between stages: a model file plus its kind, cache key, lineage and metadata.

An artifact lives in its own folder with an `artifact.json`, so any process can pick it up from
the cache without the objects that produced it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

MANIFEST = "artifact.json"


class Kind(str, Enum):
    """What an artifact holds; a stage consumes one kind and produces one."""

    TORCH = "torch"  # a pickled nn.Module
    ONNX = "onnx"
    OPENVINO = "openvino"  # OpenVINO IR (.xml with its .bin)

    def __str__(self) -> str:
        return self.value


DEPLOYABLE = (Kind.ONNX, Kind.OPENVINO)  # kinds a runtime can measure; each such stage output is a variant


@dataclass
class Artifact:
    kind: Kind
    file: str  # model file name inside `folder`
    key: str = ""  # cache key of the stage result that made it
    lineage: list[str] = field(default_factory=list)  # stage names from the source model on
    meta: dict[str, Any] = field(default_factory=dict)  # params, quantization settings, ...
    folder: Path = Path(".")

    @property
    def path(self) -> Path:
        return self.folder / self.file

    def save(self) -> None:
        data = asdict(self)
        data.pop("folder")
        (self.folder / MANIFEST).write_text(json.dumps(data, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path) -> Artifact:
        data = json.loads((folder / MANIFEST).read_text())
        return cls(**{**data, "kind": Kind(data["kind"])}, folder=folder)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / MANIFEST).is_file()


def save_torch(model: Any, folder: Path, name: str = "model.pt") -> str:
    """Save the whole module (not just weights) so pruned shapes survive without the recipe."""
    import torch

    torch.save(model, folder / name)
    return name


def load_torch(artifact: Artifact) -> Any:
    """Load a module this tool saved in its own cache (trusted: it holds pickled classes)."""
    import torch

    return torch.load(artifact.path, map_location="cpu", weights_only=False)
