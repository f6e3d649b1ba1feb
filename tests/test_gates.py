"""`compress gate`: exit codes, JUnit XML, the GitHub step summary, and no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from compress.errors import UsageError
from compress.report.gates import Gates, check, parse_percent
from compress.report.schema import SCHEMA_VERSION, Variant
from tests.conftest import ROOT
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
    limits = [{"max_ms": 1.5}, {"max_ms": 15, "percentile": "p90", "batch_size": 32}, {"max_ms": 9, "batch_size": 8}]
    results = check(sample_report(), Gates(max_latency_ms=limits, variants=["int8", "worse"]))
    assert [(r.gate, r.variant, r.limit, r.value, r.passed) for r in results] == [
        ("max_latency_ms[t, p50, batch 1]", "int8", "1.5 ms", "0.500 ms", True),
        ("max_latency_ms[t, p90, batch 32]", "int8", "15 ms", "11.000 ms", True),
        ("max_latency_ms[t, p50, batch 8]", "int8", "9 ms", "not measured", False),
        ("max_latency_ms[t, p50, batch 1]", "worse", "1.5 ms", "1.000 ms", True),
        ("max_latency_ms[t, p90, batch 32]", "worse", "15 ms", "22.000 ms", False),
        ("max_latency_ms[t, p50, batch 8]", "worse", "9 ms", "not measured", False),
    ]  # fp32 (2 ms at batch 1) is not among the chosen variants


def test_compare_prints_changes(report_file, tmp_path):
    new = sample_report()
    new.variants[1].size_bytes = 500_000
    new.variants = new.variants[:2]
    new_path = tmp_path / "new.json"
    new.save(new_path)
    result = compress("compare", str(report_file), str(new_path))
    assert result.returncode == 0, result.stderr
    assert "1.000 → 0.500 MB (-50.0%)" in result.stdout and "gone" in result.stdout


# "A gate with nothing to check is an error": each case below once passed silently or crashed.


def gate_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, text: str) -> bool:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return result.returncode == 2 and "Traceback" not in result.stderr and any(text in line for line in lines)


def save(report, path):
    report.save(path)
    return str(path)


def with_intervals(report, p50_ms: float, low: float, high: float):
    for lat in report.variant("int8").latency:
        lat.p50_ms, lat.p50_ci_low_ms, lat.p50_ci_high_ms = p50_ms, low, high
    return report


def test_an_unknown_variant_is_an_error_listing_the_known_ones(report_file):
    result = gate_cli("gate", str(report_file), "--max-size-mb", "1", "--variant", "typo")
    assert one_line_error(result, "unknown variant typo; the report has fp32, int8, worse"), result.stderr


def test_a_report_without_variants_is_an_error(tmp_path):
    report = sample_report()
    report.variants = []
    result = gate_cli("gate", save(report, tmp_path / "r.json"), "--max-size-mb", "1")
    assert one_line_error(result, "the report has no variants"), result.stderr


@pytest.mark.parametrize(
    "gates, change, message",
    [({"min_accuracy": 90}, "no_accuracy", "min_accuracy: variant int8 has no accuracy"),
     ({"max_accuracy_drop": 1}, "no_accuracy", "max_accuracy_drop: variant int8 has no accuracy"),
     ({"max_accuracy_drop": 1}, "no_base_accuracy", "max_accuracy_drop: variant fp32 \\(the baseline\\) has no accuracy"),
     ({"max_accuracy_drop": 1}, "no_baseline", "max_accuracy_drop: the baseline variant fp32 is not in the report")],
)  # fmt: skip
def test_accuracy_gates_without_an_accuracy_are_errors(gates, change, message):
    report = sample_report()
    if change == "no_accuracy":
        report.variant("int8").accuracy = None
    elif change == "no_base_accuracy":
        report.variant("fp32").accuracy = None
    else:
        report.variants = report.variants[1:]
    with pytest.raises(UsageError, match=message):
        check(report, Gates(variants=["int8"], **gates))


def test_accuracy_gate_without_an_accuracy_exits_2(tmp_path):
    report = sample_report()
    report.variant("int8").accuracy = None
    result = gate_cli("gate", save(report, tmp_path / "r.json"), "--min-accuracy", "90", "--variant", "int8")
    assert one_line_error(result, "min_accuracy: variant int8 has no accuracy"), result.stderr


@pytest.mark.parametrize(
    "gates, drop, message",
    [({"max_latency_regression": 5}, "latency", "max_latency_regression: variant int8 has no latency"),
     ({"max_accuracy_regression": 1}, "accuracy", "max_accuracy_regression: variant int8 has no accuracy")],
)  # fmt: skip
def test_regression_gates_without_a_measurement_are_errors(gates, drop, message):
    new = sample_report()
    setattr(new.variant("int8"), drop, [] if drop == "latency" else None)
    with pytest.raises(UsageError, match=message):
        check(new, Gates(variants=["int8"], **gates), sample_report())


def test_variants_new_or_gone_since_the_baseline_are_result_rows():
    new, old = sample_report(), sample_report()
    new.variant("int8").name = "int8-v2"
    results = check(new, Gates(max_size_regression=0), old)
    rows = {(r.variant, r.verdict, r.passed) for r in results if r.gate == "max_size_regression"}
    assert ("int8-v2", "new: not in baseline", True) in rows
    assert ("int8", "gone: not in this report", False) in rows
    assert ("fp32", "pass", True) in rows


@pytest.mark.parametrize("field", ["size_bytes", "p50_ms"])
def test_a_zero_baseline_cannot_be_compared_in_percent(field):
    old = sample_report()
    if field == "size_bytes":
        old.variant("int8").size_bytes = 0
    else:
        old.variant("int8").latency[0].p50_ms = 0.0
    gates = Gates(variants=["int8"], max_size_regression=0, max_latency_regression=5)
    with pytest.raises(UsageError, match="is 0 in the baseline; a change in percent cannot be computed"):
        check(sample_report(), gates, old)


def test_latency_regressions_count_only_when_the_intervals_say_so():
    old = with_intervals(sample_report(), 0.180, 0.178, 0.182)
    gates = Gates(variants=["int8"], max_latency_regression=10)
    # p50 is 11 % slower, but the intervals overlap within 10 %: no regression shown.
    noisy = check(with_intervals(sample_report(), 0.200, 0.170, 0.230), gates, old)
    assert noisy[0].passed and noisy[0].value == "0.200 [0.170, 0.230] vs 0.180 [0.178, 0.182] ms (+11.11%)"
    # The whole new interval is above the old one plus 10 %: a regression.
    slow = check(with_intervals(sample_report(), 0.210, 0.205, 0.215), gates, old)
    assert not slow[0].passed and slow[0].value == "0.210 [0.205, 0.215] vs 0.180 [0.178, 0.182] ms (+16.67%)"


@pytest.mark.parametrize("what", ["cpu", "versions"])
def test_regressions_refuse_reports_from_different_setups(what):
    old = sample_report()
    if what == "cpu":
        old.environment["cpu"]["model"] = "another cpu"
        reason = "CPU another cpu in the baseline, cpu in this report"
    else:
        old.targets[0].versions = {"onnxruntime": "1.17.0"}
        reason = "target t: runtime versions onnxruntime 1.17.0 in the baseline, onnxruntime – in this report"
    gates = Gates(max_latency_regression=5)
    with pytest.raises(UsageError, match=reason):
        check(sample_report(), gates, old)
    warnings: list[str] = []
    results = check(sample_report(), gates, old, allow_different_hardware=True, warn=warnings.append)
    assert results and len(warnings) == 1 and reason in warnings[0]


def test_allow_different_hardware_prints_a_warning(report_file, tmp_path):
    old = sample_report()
    old.environment["cpu"]["model"] = "another cpu"
    args = ["gate", str(report_file), "--baseline", save(old, tmp_path / "old.json"), "--max-latency-regression", "50%"]
    assert one_line_error(gate_cli(*args), "different hardware or runtime versions")
    allowed = gate_cli(*args, "--allow-different-hardware")
    assert allowed.returncode == 0, allowed.stderr
    assert "WARNING: different hardware or runtime versions" in allowed.stderr


def test_a_report_of_another_schema_version_is_refused(tmp_path):
    data = json.loads(sample_report().model_dump_json())
    data["schema_version"] = 2
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    result = gate_cli("gate", str(path), "--max-size-mb", "1")
    assert one_line_error(result, f"{path} has schema_version 2; this compress reads {SCHEMA_VERSION}"), result.stderr


def disturbed(report):
    lat = report.variant("int8").latency[0]
    lat.disturbed, lat.disturbance = True, "load average 3.1 on 2 cores"
    return report


def test_a_disturbed_latency_is_not_judged():
    reason = "variant int8 on target t \\(batch 1\\) was timed under other load: load average 3.1 on 2 cores"
    with pytest.raises(UsageError, match=f"max_latency_ms.*{reason}"):
        check(disturbed(sample_report()), Gates(max_latency_ms=[{"max_ms": 5}]))
    with pytest.raises(UsageError, match=f"max_latency_regression.*{reason}"):
        check(disturbed(sample_report()), Gates(max_latency_regression=5), sample_report())
    with pytest.raises(UsageError, match="max_latency_regression.*int8 in the baseline report on target t"):
        check(sample_report(), Gates(max_latency_regression=5), disturbed(sample_report()))
    warnings: list[str] = []
    results = check(disturbed(sample_report()), Gates(max_latency_ms=[{"max_ms": 5}]), allow_disturbed=True,
                    warn=warnings.append)  # fmt: skip
    assert len(results) == 3 and len(warnings) == 1 and "load average 3.1" in warnings[0]


def test_allow_disturbed_judges_with_a_warning(tmp_path):
    path = save(disturbed(sample_report()), tmp_path / "r.json")
    assert one_line_error(gate_cli("gate", path, "--max-latency-ms", "5"), "timed under other load")
    allowed = gate_cli("gate", path, "--max-latency-ms", "5", "--allow-disturbed")
    assert allowed.returncode == 0 and "WARNING: max_latency_ms" in allowed.stderr, allowed.stderr


def test_an_unwritable_junit_file_is_bad_input(report_file, tmp_path):
    result = gate_cli("gate", str(report_file), "--max-size-mb", "5", "--junit", str(tmp_path))
    assert one_line_error(result, f"cannot write --junit {tmp_path}"), result.stderr


def test_an_unwritable_step_summary_is_a_warning(report_file, tmp_path):
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path)}
    passed = gate_cli("gate", str(report_file), "--max-size-mb", "5", env=env)
    assert passed.returncode == 0 and "Traceback" not in passed.stderr, passed.stderr
    assert f"warning: cannot append to $GITHUB_STEP_SUMMARY ({tmp_path})" in passed.stderr
    assert gate_cli("gate", str(report_file), "--max-size-mb", "2", env=env).returncode == 1


@pytest.mark.parametrize("broken", ["{not json", "empty batch_sizes"])
def test_compress_report_on_a_broken_report_is_bad_input(broken, tmp_path):
    if broken == "{not json":
        (tmp_path / "report.json").write_text(broken)
    else:
        report = sample_report()
        report.targets[0].batch_sizes = []
        report.save(tmp_path / "report.json")
    result = gate_cli("report", str(tmp_path))
    assert one_line_error(result, "report.json"), result.stderr


def test_error_lines_are_not_wrapped_off_a_terminal(tmp_path):
    missing = tmp_path / ("x" * 200) / "report.json"
    result = gate_cli("gate", str(missing), "--max-size-mb", "1")
    assert one_line_error(result, f"report {missing} not found"), result.stderr


def test_a_failed_sweep_point_fails_every_gate_instead_of_passing_with_size_0():
    report = sample_report()
    report.variants.append(Variant(name="failed[ratio=0.9]", stages=[], format="–", precision="–", path="",
                                   size_bytes=0, errors=["pruning removed every channel"]))  # fmt: skip
    (row,) = [r for r in check(report, Gates(max_size_mb=5, min_accuracy=90)) if r.variant == "failed[ratio=0.9]"]
    assert not row.passed and row.detail == "pruning removed every channel"


def test_regression_limits_without_a_baseline_are_errors(report_file, tmp_path):
    given = gate_cli("gate", str(report_file), "--max-latency-regression", "5%")
    assert one_line_error(given, "--max-latency-regression needs --baseline OLD.json"), given.stderr
    report = sample_report()
    report.gates = {"max_size_regression": 0}
    stored = gate_cli("gate", save(report, tmp_path / "r.json"))
    assert one_line_error(stored, "no gates to check"), stored.stderr
    assert "WARNING: max_size_regression skipped: no --baseline" in stored.stderr
