"""compress: one declarative pipeline to prune, distill, quantize, export and measure models.

The Python API, for notebooks and scripts:

    import compress

    report = compress.run("recipes/quickstart.yaml", output="out", overrides={"stages[train].epochs": 3})
    best = report.variant("int8")
    report = compress.profile(["model.onnx"], targets=["cpu-onnxruntime"], output="profile")

Errors are exceptions of compress.errors (a RecipeError lists every problem in a recipe), never a
process exit. `import compress` stays light: torch, onnxruntime and optional runtimes load only
when used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compress.recipe import Recipe
    from compress.report.schema import Report

__all__ = ["load_recipe", "profile", "run"]

Overrides = Mapping[str, Any] | Iterable[str]


def _override_items(overrides: Overrides, fields: Mapping[str, Any]) -> tuple[str, ...]:
    """`{"stages[train].epochs": 3}`, `["seed=1"]` and keyword fields as `--set` items; values JSON
    cannot write (paths, dates) are given as their text."""
    items = (
        [f"{k}={json.dumps(v, default=str)}" for k, v in overrides.items()]
        if isinstance(overrides, Mapping)
        else list(overrides)
    )
    return (*items, *(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items()))


def load_recipe(path: str | Path, overrides: Overrides = (), **fields: Any) -> Recipe:
    """Load and validate a recipe file, with overrides as `--set` takes them (a mapping of field
    paths to values, or PATH=VALUE strings) and top-level fields as keywords (`seed=1`).
    Raises RecipeError listing every problem."""
    from compress.recipe import load_recipe as _load

    return _load(path, _override_items(overrides, fields))


def run(recipe: str | Path | Recipe, output: str | Path | None = None, overrides: Overrides = (),
        log: Callable[[str], None] | None = print, **fields: Any) -> Report:  # fmt: skip
    """Run a recipe (a path, or a Recipe from load_recipe) end to end into `output` [default:
    reports/<name>] and return its report, also written there as report.json, .md and .html.
    Under torchrun, ranks other than 0 only help train and return None."""
    from compress.pipeline import run_recipe
    from compress.recipe import Recipe as _Recipe

    if isinstance(recipe, _Recipe):
        if overrides or fields:
            from compress.errors import UsageError

            raise UsageError("overrides apply when loading", hint="pass them to compress.load_recipe instead")
        loaded = recipe
    else:
        loaded = load_recipe(recipe, overrides, **fields)
    return run_recipe(loaded, output, log=log or (lambda message: None), show_progress=False)


def profile(models: Iterable[str | Path], targets: Iterable[str | Path] = ("cpu-onnxruntime",),
            output: str | Path = "reports/profile", sequence_length: int = 128,
            log: Callable[[str], None] | None = print) -> Report:  # fmt: skip
    """Time existing ONNX or OpenVINO files on targets (names or YAML files; here or over SSH) with
    random inputs, and write the usual report into `output`."""
    from compress.measure.profile import profile as _profile
    from compress.targets import resolve_targets

    specs = resolve_targets([str(t) for t in targets], [Path.cwd(), Path.cwd() / "targets"])
    return _profile([Path(m) for m in models], specs, Path(output), sequence_length, log or (lambda message: None))
