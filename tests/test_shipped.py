"""Every shipped recipe and target validates, so the examples in the repository never rot."""

from __future__ import annotations

import pytest

from compress.recipe import load_recipe
from compress.targets import load_target
from tests.conftest import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
TARGETS = sorted((ROOT / "targets").glob("*.yaml"))


def test_something_is_shipped():
    assert RECIPES and TARGETS


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_target_validates_and_is_named_after_its_file(path):
    assert load_target(path).name == path.stem
