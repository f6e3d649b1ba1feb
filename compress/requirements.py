"""Check, before any work, that every package a recipe needs is installed: each stage's and data
source's declared requirements and each local target's runtime. A missing one is exit code 3 with
the line to install it, not a failure after an hour of training."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from compress.errors import RuntimeMissingError
from compress.runtimes import check_available

if TYPE_CHECKING:
    from compress.recipe import Recipe
    from compress.targets import TargetSpec


def check_requirements(recipe: Recipe, targets: list[TargetSpec]) -> None:
    from compress import registry
    from compress.data import data_source

    needs = {f"data source '{recipe.data.source}'": data_source(recipe.data.source).requires,
             f"task '{recipe.data.task}'": registry.resolve("tasks", recipe.data.task).requires}  # fmt: skip
    needs.update({f"stage '{s.name}'": s.requires() for s in recipe.stages})
    if recipe.search:
        needs["the recipe's search"] = {"optuna": "'compress-edge[search]'"}
    for who, packages in needs.items():
        for module, install in packages.items():
            if importlib.util.find_spec(module) is None:
                raise RuntimeMissingError(f"{who} needs the Python package '{module}', which is not installed",
                                          hint=f"pip install {install}")  # fmt: skip
    check_available(targets)
