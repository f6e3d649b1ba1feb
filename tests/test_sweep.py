"""Sweeps: expansion, shared stage results, failure isolation, and resume after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from compress.artifact import Artifact
from compress.errors import RecipeError
from compress.pipeline import merge_points
from compress.recipe import point_label, recipe_from_text
from tests.test_cli import COMPRESS

SWEEP = """\
name: s
model: {arch: resnet, options: {width: 8, blocks: [1, 1]}}
data: {image_size: 16}
stages:
  - {type: train, epochs: 1, lr: 0.01}
  - {type: export}
  - {type: prune, input: train, ratio: 0.5}
  - {type: export, name: export-pruned, variant: pruned}
sweep:
  parameters:
    stages[prune].ratio: [0.25, 0.5]
    stages[export-pruned].opset: [17, 18]
targets: [TARGET]
"""


def sweep_text(target: str = "cpu-onnxruntime") -> str:
    return SWEEP.replace("TARGET", target)


def test_grid_and_random_points_with_readable_labels():
    recipe = recipe_from_text(sweep_text(), "s.yaml")
    labels = [label for label, _ in recipe.points()]
    assert labels == ["ratio=0.25,opset=17", "ratio=0.25,opset=18", "ratio=0.5,opset=17", "ratio=0.5,opset=18"]
    assert recipe.points()[3][1].stage("prune").ratio == 0.5
    random_text = sweep_text().replace("parameters:", "mode: random\n  samples: 2\n  parameters:")
    drawn = [label for label, _ in recipe_from_text(random_text, "s.yaml").points()]
    assert len(set(drawn)) == 2 and set(drawn) <= set(labels), drawn  # two different grid points
    assert [label for label, _ in recipe_from_text(random_text, "s.yaml").points()] == drawn  # seeded
    assert point_label({"a.x": 1, "b.x": 2}) == "a.x=1,b.x=2"


def test_bad_sweep_points_are_reported_with_their_label():
    with pytest.raises(RecipeError) as info:
        recipe_from_text(sweep_text().replace("[0.25, 0.5]", "[0.25, 1.5]"), "s.yaml")
    messages = [str(p) for p in info.value.problems]
    assert any("sweep point ratio=1.5" in m and "stages[2].ratio" in m for m in messages)
    with pytest.raises(RecipeError) as info:
        recipe_from_text(sweep_text().replace("stages[prune].ratio", "seed"), "s.yaml")
    assert "must be a stage field path" in str(info.value.problems[0])


def test_points_that_share_an_artifact_report_it_once():
    from compress.artifact import Artifact

    fp32, a, b = (Artifact("onnx", "m.onnx", key=k) for k in ("k-fp32", "k-a", "k-b"))
    merged = merge_points([("r=1", [("fp32", None, fp32), ("pruned", "fp32", a)]),
                           ("r=2", [("fp32", None, fp32), ("pruned", "fp32", b)])])  # fmt: skip
    assert [(n, p) for n, p, _ in merged] == [("fp32", None), ("pruned[r=1]", "fp32"), ("pruned[r=2]", "fp32")]


def run(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([COMPRESS, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def stage_results(out: Path) -> set[str]:
    """The complete stage results in a run's cache: artifact folders named <stage>-<16 hex digit key>
    (the data splits' folder, data-<key>, is not one)."""
    return {p.name for p in (out / "cache").iterdir()
            if Artifact.exists(p) and re.fullmatch(r"[^.].*-[0-9a-f]{16}", p.name)}  # fmt: skip


@pytest.mark.slow
def test_sweep_shares_training_isolates_failures_and_resumes_after_a_kill(write, tmp_path):
    from tests.conftest import TINY_TARGET

    write("tiny-ort.yaml", TINY_TARGET)
    text = (
        sweep_text("tiny-ort")
        .replace("    stages[export-pruned].opset: [17, 18]\n", "")
        .replace("[0.25, 0.5]", "[0.25, 0.5, 0.75]")
    )
    recipe = write("s.yaml", text)
    out = tmp_path / "out"
    # Kill the run while the third point is running, then resume it.
    proc = subprocess.Popen([COMPRESS, "run", str(recipe), "-o", str(out)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    for line in proc.stderr:
        if "sweep point ratio=0.75" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert not (out / "report.json").exists(), "nothing half-written"
    before = stage_results(out)
    resumed = run(["run", str(recipe), "-o", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    log = resumed.stderr
    assert log.count("train: reusing cached result") == 3, "training ran once, before the kill"
    assert "prune: reusing cached result" in log
    report = json.loads((out / "report.json").read_text())
    names = sorted(v["name"] for v in report["variants"])
    assert names == ["fp32", "pruned[ratio=0.25]", "pruned[ratio=0.5]", "pruned[ratio=0.75]"]
    # The shared prefix (model, train, export) is one result each; every point has its own prune.
    results = stage_results(out)
    stages = Counter(name.rsplit("-", 1)[0] for name in results)
    assert stages == {"model": 1, "train": 1, "export": 1, "prune": 3, "export-pruned": 3}, sorted(results)
    # The resumed run computed only what the killed point had not finished, and reused the rest:
    # the model once, then train, export, prune and export-pruned for each of the three points.
    computed = results - before
    assert computed and {name.rsplit("-", 1)[0] for name in computed} <= {"prune", "export-pruned"}, computed
    assert report["cache"] == {"reused": 1 + 3 * 4 - len(computed), "computed": len(computed)}

    # A point that fails at run time is recorded and does not stop the others.
    failing = write(
        "f.yaml",
        text.replace("ratio: 0.5}", "macs_reduction: 2.0, round_to: 1}").replace(
            "stages[prune].ratio: [0.25, 0.5, 0.75]", "stages[prune].macs_reduction: [1.5, 999]"
        ),
    )
    result = run(["run", str(failing), "-o", str(tmp_path / "f")], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    failed = [v for v in report["variants"] if v["errors"]]
    assert len(failed) == 1 and "reduction target" in failed[0]["errors"][0]
    assert any(v["name"] == "pruned[macs_reduction=1.5]" for v in report["variants"])
