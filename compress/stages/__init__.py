"""Stages: each module has `run(config, artifact, ctx) -> Artifact`, registered by its `type:`.

A stage reads its input artifact, writes its result into `ctx.workdir` and returns the new
artifact. It touches nothing else, so the pipeline can cache, resume and farm it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress import registry

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


def run_stage(config: Any, artifact: Artifact, ctx: StageContext) -> Artifact:
    """Dispatch one stage by its type."""
    return registry.resolve(registry.STAGES, config.type)(config, artifact, ctx)
