"""Checks no single field can make: stage order and kinds, references and teachers, files, model
names and the targets a recipe names. Each returns problems located in the recipe file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from compress.artifact import DEPLOYABLE, Kind
from compress.errors import Problem, RecipeError
from compress.names import NAME_PATTERN
from compress.recipe.schema import ModelSpec, Recipe
from compress.targets import TargetSpec, find_target, load_target, missing_target_problem
from compress.yamlconfig import Locator, suggest


def check_recipe(recipe: Recipe, loc: Locator) -> list[Problem]:
    problems = _check_target_fit(recipe, loc)  # first: it can settle a stage's output kind
    _resolve_round_to(recipe, loc)
    problems += _check_stages(recipe, loc)
    for name, spec in recipe.sources().items():
        section = ("models", name) if name in recipe.models else (name,)
        problems += _check_model(recipe, spec, section, loc)
        if name in recipe.models and (name in ("model", "teacher") or not re.fullmatch(NAME_PATTERN, name)):
            problems.append(loc.at(section, f"model name '{name}' is reserved or not a plain name"))
    problems += _check_data(recipe, loc)
    problems += _check_targets(recipe, loc)
    return problems


def _check_stages(recipe: Recipe, loc: Locator) -> list[Problem]:
    problems: list[Problem] = []
    produced = dict.fromkeys(recipe.sources(), Kind.TORCH)  # artifact name -> kind
    lineage: dict[str, list[str]] = {name: [] for name in produced}
    variants: dict[str, str] = {}
    previous = "model"
    for i, stage in enumerate(recipe.stages):
        here = ("stages", i)
        if stage.name in produced:
            problems.append(loc.at((*here, "name"), f"stage name '{stage.name}' is used twice"))
        source = stage.input or previous
        if source not in produced:
            msg = f"input '{source}' is not an earlier stage{suggest(source, list(produced))}; choose one of: {', '.join(produced)}"
            problems.append(loc.at((*here, "input"), msg))
        kind = produced.get(source, stage.consumes)
        if kind != stage.consumes:
            problems.append(loc.at((*here, "type"), _order_message(stage, kind, source)))
        chain = [*lineage.get(source, []), stage.name]
        found = stage.distillation()
        if found:
            distill, field = found
            problems += _check_teacher(recipe, distill, chain, produced, (*here, *field, "teacher"), loc)
        problems += _check_fallback(stage, chain, produced, here, loc)
        if stage.variant and stage.variant in variants:
            msg = f"variant name '{stage.variant}' is also produced by stage '{variants[stage.variant]}'; set a distinct 'variant'"
            problems.append(loc.at((*here, "variant"), msg))
        if stage.produces in DEPLOYABLE and stage.variant:
            variants[stage.variant] = stage.name
        produced[stage.name], lineage[stage.name] = stage.produces, chain
        previous = stage.name
    if not variants:
        problems.append(loc.at(("stages",), "no stage produces a deployable model; add an 'export' stage"))
    return problems


def _check_teacher(recipe: Recipe, distill: Any, chain: list[str], produced: dict, path: tuple,
                   loc: Locator) -> list[Problem]:  # fmt: skip
    """Resolve the default teacher (the model before the first reshaping stage) and check a named one."""
    if distill.teacher is None:
        reshaping = {s.name for s in recipe.stages if s.reshapes}
        first = next((i for i, name in enumerate(chain) if name in reshaping), None)
        if first is None:
            msg = "no default teacher: nothing was pruned before this stage; set distill.teacher to a stage name"
            return [loc.at(path[:-1], msg)]
        distill.teacher = chain[first - 1] if first > 0 else "model"
        return []
    if produced.get(distill.teacher) != Kind.TORCH:
        known = [n for n, k in produced.items() if k == Kind.TORCH]
        msg = f"teacher '{distill.teacher}' is not an earlier PyTorch stage{suggest(distill.teacher, known)}; choose one of: {', '.join(known)}"
        if distill.teacher == "teacher" and not recipe.teacher:
            msg = "teacher 'teacher' needs a top-level 'teacher:' model section"
        return [loc.at(path, msg)]
    return []


def _check_fallback(stage: Any, chain: list[str], produced: dict, here: tuple, loc: Locator) -> list[Problem]:
    """A quantize stage's fallback QAT starts from the PyTorch model exported for it, unless named."""
    if getattr(stage, "fallback", None) is None:
        return []
    if stage.fallback_from is None:
        stage.fallback_from = next((n for n in reversed(chain) if produced.get(n) == Kind.TORCH), "model")
        return []
    if produced.get(stage.fallback_from) != Kind.TORCH:
        known = [n for n, k in produced.items() if k == Kind.TORCH]
        return [loc.at((*here, "fallback_from"), f"'{stage.fallback_from}' is not an earlier PyTorch stage"
                       f"{suggest(stage.fallback_from, known)}; choose one of: {', '.join(known)}")]  # fmt: skip
    return []


NEEDS = {Kind.TORCH: "a PyTorch model", Kind.ONNX: "an exported ONNX model", Kind.OPENVINO: "an OpenVINO IR model"}
FIXES = {Kind.ONNX: "place it after an 'export' stage", Kind.TORCH: "place it before the 'export' stage",
         Kind.OPENVINO: "give it an OpenVINO model"}  # fmt: skip


def _order_message(stage: Any, kind: Kind, source: str) -> str:
    return (
        f"stage '{stage.name}' ({stage.type}) needs {NEEDS[stage.consumes]} but '{source}' gives "
        f"{NEEDS[kind]}; {FIXES[stage.consumes]}"
    )


def _check_model(recipe: Recipe, spec: ModelSpec, section: tuple, loc: Locator) -> list[Problem]:
    problems: list[Problem] = []
    if spec.arch is not None:
        problems += _check_arch(spec, section, loc, recipe.base_dir, recipe.data.task)
    if spec.python is not None:
        file, sep, func = spec.python.rpartition(":")
        if not sep or not file.endswith(".py") or not func.isidentifier():
            problems.append(loc.at((*section, "python"), f"expected 'path/to/file.py:function', got {spec.python!r}"))
        elif not recipe.resolve_path(file).is_file():
            problems.append(loc.at((*section, "python"), f"file not found: {recipe.resolve_path(file)}"))
    if spec.checkpoint and not recipe.resolve_path(spec.checkpoint).is_file():
        msg = f"checkpoint not found: {recipe.resolve_path(spec.checkpoint)}"
        problems.append(loc.at((*section, "checkpoint"), msg))
    if spec.weights and not problems:
        problems += _check_weights(recipe, spec, section, loc)
    return problems


def _check_weights(recipe: Recipe, spec: ModelSpec, section: tuple, loc: Locator) -> list[Problem]:
    """The weights file, or the published name and its file in the local cache (never downloading)."""
    from compress.errors import UsageError
    from compress.models import weights_file
    from compress.models.weights import MissingWeights

    try:
        weights_file(spec.model_copy(update={"allow_download": False}), recipe.base_dir)
    except MissingWeights as exc:
        return [] if spec.allow_download else [loc.at((*section, "weights"), f"{exc.message}; {exc.hint}")]
    except UsageError as exc:
        return [loc.at((*section, "weights"), f"{exc.message}; {exc.hint}")]
    return []


def _check_arch(spec: ModelSpec, section: tuple, loc: Locator, base_dir: Path, task: str) -> list[Problem]:
    from compress import registry
    from compress.models import model_source

    source, name = model_source(spec.arch)
    if source is None:
        prefix = spec.arch.partition(":")[0]
        known = registry.names("models")
        msg = f"unknown model source '{prefix}:'{suggest(prefix, known)}; sources: {', '.join(k + ':' for k in known)}"
        return [loc.at((*section, "arch"), msg)]
    problems = [loc.at((*section, *field), message) for field, message in source.check(name, spec.options, base_dir)]
    return problems or _check_fit(source.is_detector(name), spec.arch, task, section, loc)


def _check_fit(detector: bool | None, arch: str, task: str, section: tuple, loc: Locator) -> list[Problem]:
    """A detector for `task: detection`, and only there."""
    if detector is None or detector == (task == "detection"):
        return []
    if detector:
        return [loc.at((*section, "arch"), f"'{arch}' is a detector; it needs `data.task: detection` (got '{task}')")]
    from compress.detection import DETECTOR_MODELS

    return [loc.at((*section, "arch"), f"'{arch}' is not a detector, and `data.task` is 'detection'; "
                   f"detectors: {DETECTOR_MODELS}")]  # fmt: skip


def _check_data(recipe: Recipe, loc: Locator) -> list[Problem]:
    from compress.data import data_source

    data = recipe.data
    source = data_source(data.source)
    if data.path is None or source.path is None:
        return []
    path = recipe.resolve_path(data.path)
    if path.is_dir() if source.path == "dir" else path.is_file():
        return []
    return [loc.at(("data", "path"), f"{source.path_means} was expected at {path}, but it does not exist")]


def _check_targets(recipe: Recipe, loc: Locator) -> list[Problem]:
    problems, names = [], set()
    for i, ref in enumerate(recipe.targets):
        name = ref.name if isinstance(ref, TargetSpec) else ref
        if not isinstance(ref, TargetSpec):
            path = find_target(ref, target_search_dirs(recipe))
            if path is None:
                problems.append(missing_target_problem(ref, target_search_dirs(recipe), loc.at(("targets", i), "")))
            else:
                try:  # the file itself: its problems are located in it
                    load_target(path)
                except RecipeError as exc:
                    problems += exc.problems
        if name in names:
            problems.append(loc.at(("targets", i), f"target '{name}' is listed twice"))
        names.add(name)
    return problems


def _check_target_fit(recipe: Recipe, loc: Locator) -> list[Problem]:
    """Stages whose settings follow named targets (`for:`): find the targets, let the stage settle."""
    from compress.runtimes import runtime_class

    problems: list[Problem] = []
    for i, stage in enumerate(recipe.stages):
        runtimes = {}
        for j, name in enumerate(stage.targets_named()):
            found = _target_named(recipe, name, loc.at(("stages", i, "for", j), ""))
            if isinstance(found, TargetSpec):
                runtimes[name] = runtime_class(found.runtime)
            else:
                problems += found
        if runtimes and len(runtimes) == len(stage.targets_named()):
            problems += [loc.at(("stages", i, *path), msg) for path, msg in stage.fit_targets(runtimes)]
    return problems


def _resolve_round_to(recipe: Recipe, loc: Locator) -> None:
    """`prune round_to: auto`: the largest channel multiple the recipe's targets' runtimes prefer
    (8 without targets); a target that cannot be found is reported by _check_targets."""
    from compress.runtimes import runtime_class

    stages = [s for s in recipe.stages if getattr(s, "round_to", None) == "auto"]
    if not stages:
        return
    specs = [ref if isinstance(ref, TargetSpec) else _target_named(recipe, str(ref), loc.at(("targets",), ""))
             for ref in recipe.targets]  # fmt: skip
    multiple = max((runtime_class(t.runtime).channel_multiple for t in specs if isinstance(t, TargetSpec)), default=8)
    for stage in stages:
        stage.round_to = multiple


def _target_named(recipe: Recipe, name: str, where: Problem) -> TargetSpec | list[Problem]:
    """A target by name: one written inline in the recipe, or a target file (shipped or the user's)."""
    inline = [t for t in recipe.targets if isinstance(t, TargetSpec) and t.name == name]
    if inline:
        return inline[0]
    path = find_target(name, target_search_dirs(recipe))
    if path is None:
        return [missing_target_problem(name, target_search_dirs(recipe), where)]
    try:
        return load_target(path)
    except RecipeError as exc:
        return exc.problems


def target_search_dirs(recipe: Recipe) -> list[Path]:
    return [recipe.base_dir, recipe.base_dir.parent / "targets", Path.cwd() / "targets"]
