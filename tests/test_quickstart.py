"""The shipped quickstart, run whole: compressed variants must be much smaller and as accurate.

Latency ratios are measured and stated in the report itself, not asserted here: timing on shared
machines is too noisy for a unit test.
"""

from __future__ import annotations

import pytest

from compress.pipeline import run_recipe
from compress.recipe import load_recipe
from tests.conftest import ROOT


@pytest.mark.slow
def test_quickstart_compressed_variants_are_smaller_and_as_accurate(tmp_path):
    report = run_recipe(load_recipe(ROOT / "recipes" / "quickstart.yaml"), tmp_path, log=lambda m: None,
                        show_progress=False)  # fmt: skip
    fp32, int8, small = report.variant("fp32"), report.variant("int8"), report.variant("pruned-kd-int8")
    assert fp32.accuracy.value >= 95.0
    assert fp32.size_bytes / int8.size_bytes >= 3.8
    assert abs(int8.accuracy.value - fp32.accuracy.value) <= 1.0
    assert fp32.size_bytes / small.size_bytes >= 10
    assert abs(small.accuracy.value - fp32.accuracy.value) <= 1.0
    assert small.parent == "pruned-kd" and report.variant("pruned-kd").parent == "fp32"
    assert small.details["pruning"]["macs_after"] < small.details["pruning"]["macs_before"] / 3
