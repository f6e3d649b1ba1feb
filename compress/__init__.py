"""compress: one declarative pipeline to prune, distill, quantize, export and measure models.

`import compress` stays light: torch, onnxruntime and optional runtimes load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from compress.recipe import Recipe
    from compress.report.schema import Report

__all__ = ["load_recipe", "run"]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load and validate a recipe file; raises RecipeError listing every problem."""
    from compress.recipe import load_recipe as _load

    return _load(path, overrides)


def run(recipe: str | Path | Recipe, output: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Report:
    """Run a recipe (a path or a loaded Recipe) and return its report."""
    from compress.pipeline import run_recipe
    from compress.recipe import Recipe as _Recipe

    loaded = recipe if isinstance(recipe, _Recipe) else load_recipe(recipe, overrides)
    return run_recipe(loaded, output)
