"""The README stays true: it documents every recipe and target key, and its two commands."""

from __future__ import annotations

import re

from compress.recipe import Recipe
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def schema_keys(schema: dict) -> set[str]:
    keys = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    return keys


def test_every_recipe_and_target_key_is_documented():
    documented = set(re.findall(r"`([a-z_]+)(?:\.[a-z_]+)?`", README)) | set(
        re.findall(r"`[a-z_]+\.([a-z_]+)`", README)
    )
    missing = sorted(schema_keys(Recipe.model_json_schema()) - documented)
    assert not missing, f"README lacks these keys: {missing}"


def test_the_two_commands_and_ci_agree():
    assert "make quickstart" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
