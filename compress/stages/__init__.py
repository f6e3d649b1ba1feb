"""The Stage interface. A stage is one module: a configuration model that subclasses `Stage` (its
`type:` literal, its own fields, its place in the graph) and implements `run`. It is registered by
its `type:` in compress.registry, or by a plug-in's `compress.stages` entry point.

A stage reads its input artifact, writes its result into `ctx.workdir` and returns the new
artifact. It touches nothing else, so the pipeline can cache, resume and farm it out. Stage
modules import torch and other heavy packages inside `run`, so validating a recipe stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from compress.artifact import Kind
from compress.config import Strict
from compress.names import NAME_PATTERN

if TYPE_CHECKING:
    from compress.artifact import Artifact
    from compress.data import Splits
    from compress.tasks import Task


@dataclass
class StageContext:
    splits: Splits
    task: Task
    seed: int
    workdir: Path  # where the stage writes its files; becomes the artifact's folder
    shared_cache: Path | None = None  # results reused across stages, e.g. teacher outputs
    refs: dict[str, Artifact] = field(default_factory=dict)  # artifacts named by config.references()
    log: Callable[[str], None] = print
    show_progress: bool = True
    checkpoints: Path | None = None  # where a training stage keeps its epoch checkpoint to resume from
    augment: dict | None = None  # the data source's training augmentation under `augment: auto`
    workers: int = 0  # processes reading training batches ahead (data.workers)


class Resources(Strict):
    """What one task of a stage takes on a cluster (executor ray); not part of its cache key."""

    cpus: float = Field(1, gt=0, le=4096)
    gpus: float = Field(0, ge=0, le=64)


class Stage(Strict):
    """Fields every stage has, and what the pipeline asks of a stage."""

    name: str | None = Field(None, pattern=NAME_PATTERN, description="unique stage name; defaults to its type")
    input: str | None = Field(None, description="name of the stage whose output this one takes")
    variant: str | None = Field(None, pattern=NAME_PATTERN, description="report name of the model this stage produces")
    resources: Resources = Field(default_factory=Resources, description="cpus and gpus per task (executor ray)")
    default_variant: ClassVar[str | None] = None  # set on stages whose output is deployable
    # Whether the model's structure changes; distillation's default teacher is the model before.
    reshapes: ClassVar[bool] = False

    @property
    def consumes(self) -> Kind:
        """The artifact kind this stage takes."""
        return Kind.TORCH

    @property
    def produces(self) -> Kind:
        """The artifact kind this stage makes."""
        return Kind.TORCH

    def distillation(self) -> tuple[Any, tuple[str, ...]] | None:
        """(distillation settings, their field path in this stage) when this stage distils; the
        recipe resolves a default teacher into them."""
        return None

    def training(self) -> tuple[Any, tuple[str, ...]] | None:
        """(training settings, their field path in this stage) when this stage trains; their
        `device:` and `amp:` are checked against this machine before any work."""
        return None

    def references(self) -> list[str]:
        """Artifacts this stage reads besides its input: by default the teacher it distils from."""
        found = self.distillation()
        return [found[0].teacher] if found and found[0].teacher else []

    def targets_named(self) -> list[str]:
        """Targets whose needs decide some of this stage's settings (a quantize stage's `for:`)."""
        return []

    def fit_targets(self, runtimes: dict[str, type]) -> list[tuple[tuple, str]]:
        """Settle those settings when the recipe loads, given {target name: its runtime class};
        returns (field path in this stage, problem) pairs."""
        return []

    def requires(self) -> dict[str, str]:
        """Packages this configuration needs (import name -> pip extra), checked before any work."""
        return {}

    def run(self, artifact: Artifact, ctx: StageContext) -> Artifact:
        """Make this stage's artifact from `artifact`, writing only into `ctx.workdir`."""
        raise NotImplementedError(f"stage type '{getattr(self, 'type', '?')}' does not implement run()")
