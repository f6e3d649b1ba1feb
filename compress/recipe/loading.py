"""Loading a recipe: read the YAML, apply overrides, validate, check across fields, expand sweeps.

Every mistake found is collected and raised as one RecipeError whose problems name the file, line,
column and field path.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
from pathlib import Path
from typing import Any

import yaml

from compress.errors import Problem, RecipeError
from compress.recipe.checks import check_recipe
from compress.recipe.overrides import apply_override, parse_field_path, set_field
from compress.recipe.schema import SWEEPABLE, Recipe, Sweep
from compress.yamlconfig import Locator, Marks, parse_yaml, read_yaml, validate


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override, validate and check a recipe file; raise RecipeError listing every problem."""
    path = Path(path)
    data, marks = read_yaml(path)
    return recipe_from_data(data, marks, str(path), path, overrides)


def recipe_from_text(text: str, filename: str = "<recipe>", overrides: tuple[str, ...] = ()) -> Recipe:
    data, marks = parse_yaml(text, filename)
    return recipe_from_data(data, marks, filename, None, overrides)


def recipe_from_data(data: Any, marks: Marks, filename: str, path: Path | None, overrides=()) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError([Problem("", "a recipe must be a YAML mapping of sections", filename, 1, 1)])
    problems = [p for item in overrides for p in apply_override(data, item)]
    if problems:
        raise RecipeError(problems)
    recipe = validate(Recipe, data, marks, filename, what="recipe")
    recipe._path = path.resolve() if path else None
    recipe._hash = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]
    loc = Locator(marks, filename)
    problems = check_recipe(recipe, loc)
    if not problems and recipe.sweep:
        recipe._points, problems = expand_sweep(data, recipe, loc, path)
    if not problems and recipe.search:
        problems = check_space(recipe, loc)
        recipe._source = ({k: v for k, v in data.items() if k != "search"}, marks, filename, path)
    if problems:
        raise RecipeError(problems)
    return recipe


def sweep_grid(sweep: Sweep, seed: int) -> list[dict[str, Any]]:
    """Every combination (grid), or `samples` of them drawn without replacement (random)."""
    keys = list(sweep.parameters)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.parameters.values())]
    if sweep.mode == "random":
        grid = random.Random(seed).sample(grid, min(sweep.samples or len(grid), len(grid)))
    return grid


def point_label(point: dict[str, Any]) -> str:
    """'stages[prune].ratio' = 0.3 -> 'ratio=0.3' (the full path when last names repeat)."""
    lasts = [str(parse_field_path(k)[-1]) if parse_field_path(k) else k for k in point]
    names = lasts if len(set(lasts)) == len(lasts) else list(point)
    return ",".join(f"{n}={v}" for n, v in zip(names, point.values(), strict=True))


def check_space(recipe: Recipe, loc: Locator) -> list[Problem]:
    """Search paths name stage fields (their values are checked when each trial's recipe is built)."""
    problems = []
    if recipe.sweep:
        problems.append(loc.at(("search",), "a recipe has a sweep or a search, not both"))
    spec = recipe.search
    targets = [Path(t).stem if isinstance(t, str) else t.name for t in recipe.targets]
    if spec.target and spec.target not in targets:
        problems.append(loc.at(("search", "target"), f"target '{spec.target}' is not one of the recipe's targets: "
                                                     f"{', '.join(targets)}"))  # fmt: skip
    variants = [s.variant for s in recipe.stages if s.variant]
    if spec.candidate and spec.candidate not in variants:
        problems.append(loc.at(("search", "candidate"), f"no stage makes a variant '{spec.candidate}'; "
                                                        f"variants: {', '.join(variants)}"))  # fmt: skip
    for key in spec.space:
        parts = parse_field_path(key)
        if parts is None or parts[0] not in SWEEPABLE:
            msg = f"search space key '{key}' must be a stage field path such as stages[prune].ratio"
            problems.append(loc.at(("search", "space", key), msg))
    return problems


def trial_recipe(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """The recipe with a search trial's settings in place of its own (a RecipeError names the field)."""
    data, marks, filename, path = recipe._source
    point = copy.deepcopy(data)
    problems = [p for k, v in params.items() for p in set_field(point, parse_field_path(k), v, k, filename)]
    if problems:
        raise RecipeError(problems)
    return recipe_from_data(point, marks, filename, path)


def expand_sweep(data: dict, recipe: Recipe, loc: Locator, path: Path | None) -> tuple[list, list[Problem]]:
    problems: list[Problem] = []
    for key in recipe.sweep.parameters:
        parts = parse_field_path(key)
        if parts is None or parts[0] not in SWEEPABLE:
            msg = f"sweep parameter '{key}' must be a stage field path such as stages[prune].ratio"
            problems.append(loc.at(("sweep", "parameters", key), msg))
    if problems:
        return [], problems
    base = {k: v for k, v in data.items() if k != "sweep"}
    points = []
    for point in sweep_grid(recipe.sweep, recipe.seed):
        label, point_data = point_label(point), copy.deepcopy(base)
        errs = [loc.at(("sweep", "parameters", k), p.message) for k, v in point.items()
                for p in set_field(point_data, parse_field_path(k), copy.deepcopy(v), k, loc.filename)]  # fmt: skip
        try:
            if errs:
                raise RecipeError(errs)
            point_recipe = recipe_from_data(point_data, loc.marks, loc.filename, path)
        except RecipeError as exc:
            problems += [Problem(p.path, f"sweep point {label}: {p.message}", p.file, p.line, p.column)
                         for p in exc.problems]  # fmt: skip
            continue
        points.append((label, point_recipe))
    return points, problems
