"""The recipe: its schema (schema.py), loading and sweeps (loading.py), `--set` overrides
(overrides.py) and the checks that span fields (checks.py). Torch-free."""

from __future__ import annotations

from compress.recipe.loading import load_recipe, point_label, recipe_from_text
from compress.recipe.overrides import parse_field_path
from compress.recipe.schema import DataSpec, ModelSpec, Recipe

__all__ = ["DataSpec", "ModelSpec", "Recipe", "load_recipe", "parse_field_path", "point_label",
           "recipe_from_text", "recipe_json_schema"]  # fmt: skip


def recipe_json_schema() -> dict:
    return Recipe.model_json_schema()
