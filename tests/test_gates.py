"""`compress gate`: exit codes, JUnit XML, the GitHub step summary, and no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from compress.report.gates import Gates, check, parse_percent
from tests.test_cli import compress
from tests.test_report import sample_report


@pytest.fixture
def report_file(tmp_path):
    report = sample_report()
    report.gates = {"max_size_mb": 5.0}
    path = tmp_path / "report.json"
    report.save(path)
    return path


def test_percentages_parse():
    assert parse_percent("5%") == 5.0 and parse_percent(0) == 0 and parse_percent(" 2.5 % ") == 2.5
    with pytest.raises(ValueError):
        parse_percent("five")


def test_gates_pass_and_fail_with_exit_codes(report_file, tmp_path):
    ok = compress("gate", str(report_file), "--max-latency-ms", "3", "--min-accuracy", "96")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    junit = tmp_path / "gates.xml"
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    bad = subprocess.run([sys.executable, "-m", "compress", "gate", str(report_file), "--max-size-mb", "2",
                          "--max-accuracy-drop", "0.6", "--junit", str(junit)],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert "FAIL" in bad.stdout and "max_size_mb" in bad.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "6" and suite.get("failures") == "2"  # fp32 over 2 MB; 'worse' drops 1 point
    assert "compress gates: FAILED" in summary.read_text()


def test_recipe_gates_stored_in_the_report_are_reused(report_file):
    result = compress("gate", str(report_file))
    assert result.returncode == 0 and "max_size_mb" in result.stdout


def test_regressions_against_a_previous_report(report_file, tmp_path):
    old = sample_report()
    for v in old.variants:
        for lat in v.latency:
            lat.p50_ms *= 0.9  # the new report is about 11 % slower
    old_path = tmp_path / "old.json"
    old.save(old_path)
    slow = compress("gate", str(report_file), "--baseline", str(old_path), "--max-latency-regression", "5%")
    assert slow.returncode == 1
    fine = compress("gate", str(report_file), "--baseline", str(old_path), "--max-latency-regression", "15%",
                    "--max-size-regression", "0%")  # fmt: skip
    assert fine.returncode == 0


def test_bare_model_size_gate(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0" * 3_000_000)
    assert compress("gate", "--model", str(model), "--max-size-mb", "4").returncode == 0
    assert compress("gate", "--model", str(model), "--max-size-mb", "2").returncode == 1


@pytest.mark.parametrize(
    "args, message",
    [(["nope.json", "--max-size-mb", "1"], "not found"), (["--model", "nope.onnx", "--max-size-mb", "1"], "not found"),
     (["REPORT", "--percentile", "p42", "--max-latency-ms", "1"], "bad gate option")],
)  # fmt: skip
def test_bad_gate_input_exits_2(args, message, report_file):
    result = compress("gate", *[str(report_file) if a == "REPORT" else a for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_gate_never_imports_torch(report_file):
    code = (
        "import sys\nfrom compress.cli import app\n"
        f"try:\n    app(['gate', {str(report_file)!r}, '--max-size-mb', '10'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = {'torch', 'onnxruntime', 'openvino'} & set(sys.modules)\n"
        "assert not heavy, heavy\nassert code in (0, None), code\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_check_counts_every_variant_and_target():
    results = check(sample_report(), Gates(max_latency_ms=[{"max_ms": 1.5}], variants=["int8", "worse"]))
    assert [(r.variant, r.passed) for r in results] == [("int8", True), ("worse", True)]
    assert json.dumps([r.gate for r in results])


def test_compare_prints_changes(report_file, tmp_path):
    new = sample_report()
    new.variants[1].size_bytes = 500_000
    new.variants = new.variants[:2]
    new_path = tmp_path / "new.json"
    new.save(new_path)
    result = compress("compare", str(report_file), str(new_path))
    assert result.returncode == 0, result.stderr
    assert "1.000 → 0.500 MB (-50.0%)" in result.stdout and "gone" in result.stdout


def test_regressions_from_a_zero_size_or_latency_are_infinite_not_a_crash(tmp_path):
    """Found by tests/test_properties.py: a baseline variant of size 0 or p50 0 ms (a failed sweep point
    is stored with size 0) divided by zero."""
    old = sample_report()
    old.variants[0].size_bytes = 0
    old.variants[0].latency[0].p50_ms = 0.0
    old.variants[1].size_bytes = old.variants[1].latency[0].p50_ms = 0
    new = sample_report()
    new.variants[1].size_bytes = new.variants[1].latency[0].p50_ms = 0
    results = check(new, Gates(max_size_regression=5, max_latency_regression=5), old)
    verdicts = {(r.gate.split("[")[0], r.variant): (r.value, r.passed) for r in results if "batch 32" not in r.gate}
    assert verdicts[("max_size_regression", "fp32")] == ("+inf%", False)
    assert verdicts[("max_latency_regression", "fp32")] == ("+inf%", False)
    assert verdicts[("max_size_regression", "int8")] == ("+0.00%", True)
    assert verdicts[("max_latency_regression", "int8")] == ("+0.00%", True)
