"""A recipe's sweep points as one graph of stage tasks, run by the executor the recipe names
(compress.execute), then read back per point as the local loop would have made them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from compress.artifact import Artifact
from compress.data import data_source
from compress.execute import Setting, StageTask, run_graph
from compress.variants import merge_points

if TYPE_CHECKING:
    from compress.pipeline import Pipeline


def plan(pipeline: Pipeline, sources: dict[str, Artifact], data_key: str) -> tuple[dict, list]:
    """({key: task} over every point, [(point label, point recipe, {stage name: key})]). Two points
    that share a prefix ask for the same keys, so the prefix is one task."""
    tasks: dict[str, StageTask] = {}
    points = []
    source_keys = {name: a.key for name, a in sources.items()}
    for label, recipe in pipeline.recipe.points():
        made = dict(source_keys)
        previous = "model"
        for stage in recipe.stages:
            parent = made[stage.input or previous]
            refs = {name: made[name] for name in stage.references()}
            key = pipeline.stage_key(stage, parent, refs, data_key)
            depends = tuple(k for k in (parent, *refs.values()) if k not in source_keys.values())
            config = stage.model_dump(by_alias=True, exclude_unset=True)
            tasks.setdefault(key, StageTask(stage.name, key, config, parent, refs, label, depends,
                                            stage.resources.model_dump()))  # fmt: skip
            made[stage.name], previous = key, stage.name
        points.append((label, recipe, {s.name: made[s.name] for s in recipe.stages}))
    return tasks, points


def run_points_as_graph(pipeline: Pipeline, sources: dict[str, Artifact], data_key: str) -> tuple[list, list]:
    """Run every point's stages as tasks on the recipe's executor; returns what Pipeline.run_points
    returns: the merged variants and the stage failures (one per point a failed task belonged to)."""
    spec, recipe = pipeline.recipe.executor, pipeline.recipe
    tasks, points = plan(pipeline, sources, data_key)
    jobs = spec.jobs or os.cpu_count() or 1
    setting = Setting(cache=str(pipeline.cache), splits=str(pipeline.splits_folder), task=recipe.data.task,
                      text=data_source(recipe.data.source).text, seed=recipe.seed,
                      augment=data_source(recipe.data.source).augment, logs=str(pipeline.out / "logs"),
                      workers=recipe.data.workers)  # fmt: skip
    folders = {a.key: str(a.folder) for a in sources.values()}
    pipeline.log(f"executor {spec.type}: {len(tasks)} stage task(s) for {len(points)} point(s), {jobs} at a time")
    outcomes = run_graph(tasks, setting, folders, spec.type, jobs, pipeline.log, spec.address)
    pipeline.reused += sum(o.reused for o in outcomes.values() if o.folder)
    pipeline.computed += sum(not o.reused for o in outcomes.values() if o.folder)
    per_point, failures = [], []
    for label, point, keys in points:
        outputs = dict(sources)
        for name, key in keys.items():
            outcome = outcomes.get(key)
            if outcome is not None and outcome.folder:
                outputs[name] = Artifact.load(Path(outcome.folder))
            elif outcome is not None:
                failures.append(outcome.failure.model_copy(update={"point": label}))
            else:
                pipeline.log(f"{name}: skipped: a stage it needs failed")
        per_point.append((label, pipeline.variants(point, outputs)))
    return merge_points(per_point, len(points)), failures
