"""Names in recipes and reports become file names only through one sanitising function, and the
schema refuses names that would climb out of the output folder."""

from __future__ import annotations

import pytest

from compress.errors import RecipeError
from compress.names import file_name
from compress.recipe import recipe_from_text
from tests.test_gates import sample_report

RECIPE = """\
name: {name}
model: {{arch: resnet}}
stages:
  - {{type: train, name: {stage}}}
  - {{type: export, variant: {variant}}}
"""


@pytest.mark.parametrize("name, stage, variant, field", [
    ("..", "train", "fp32", "name"),
    ("ok", "a/b", "fp32", "stages[0].name"),
    ("ok", "train", "../../X", "stages[1].variant"),
    ("ok", "train", ".hidden", "stages[1].variant"),
])  # fmt: skip
def test_names_that_would_escape_the_output_folder_are_refused(name, stage, variant, field):
    with pytest.raises(RecipeError) as caught:
        recipe_from_text(RECIPE.format(name=name, stage=stage, variant=variant), "r.yaml")
    assert [p.path for p in caught.value.problems] == [field]


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "..", "a\\b", "int8[ratio=0.3]", "fp32", ""])
def test_file_names_stay_in_their_folder_and_distinct(name, tmp_path):
    safe = file_name(name)
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert not safe.startswith(".")
    if name in ("fp32", "int8[ratio=0.3]"):
        assert safe == name  # ordinary names, sweep names included, are kept as they are
    assert file_name("a/b") != file_name("a_b")


def test_a_crafted_report_target_name_writes_no_file_outside(tmp_path):
    from compress.report.outputs import render_all

    report = sample_report()
    for info in report.targets:
        old = info.name
        info.name = "../../escaped"
        for v in report.variants:
            for lat in v.latency:
                lat.target = info.name if lat.target == old else lat.target
        break
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    render_all(report, folder)
    assert not list(tmp_path.glob("escaped*")) and not list((tmp_path / "a").glob("*.png"))
    assert [p.name for p in folder.glob("pareto-*.png")]
