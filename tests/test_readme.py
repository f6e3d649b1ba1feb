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


def test_every_registered_component_is_in_the_reference():
    """Derived from the registry: a new stage, runtime, data source, model source or task fails
    this test until the README documents it."""
    from compress import registry

    stages = set(re.findall(r"^#### `([a-z0-9-]+)`", README, re.M))
    missing = [f"stage {n}" for n in registry.BUILTIN["stages"] if n not in stages]
    for kind, what in (("runtimes", "runtime"), ("datasets", "data source"), ("tasks", "task")):
        missing += [f"{what} {n}" for n in registry.BUILTIN[kind] if f"`{n}`" not in README]
    missing += [f"model source {n}:" for n in registry.BUILTIN["models"] if n != "zoo" and f"`{n}:" not in README]
    assert not missing, f"README lacks: {missing}"
