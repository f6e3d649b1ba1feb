"""Report rendering from report.json alone: fronts, ratios, markdown and plots."""

from __future__ import annotations

import pytest

from compress.report.pareto import front, mark_fronts
from compress.report.plots import write_plots
from compress.report.render import to_markdown
from compress.report.schema import Accuracy, Latency, RecipeInfo, Report, TargetInfo, Variant
from tests.conftest import cli


def latency(p50: float, batch: int = 1) -> Latency:
    return Latency(target="t", runtime="onnxruntime", batch_size=batch, threads=1, precision="fp32", p50_ms=p50,
                   p90_ms=p50 * 1.1, p99_ms=p50 * 1.2, mean_ms=p50, std_ms=0.1, min_ms=p50 * 0.9, max_ms=p50 * 2,
                   iterations=100, seconds=1.0, throughput=batch * 1000 / p50)  # fmt: skip


def variant(name: str, acc: float, p50: float, size: int, parent: str | None = None) -> Variant:
    a = Accuracy(metric="accuracy", value=acc, split="test", runtime="onnxruntime", target="t", samples=360)
    return Variant(name=name, stages=["train", "export"], parent=parent, format="onnx", precision="fp32",
                   path=f"models/{name}.onnx", size_bytes=size, accuracy=a, accuracy_per_target=[a],
                   latency=[latency(p50), latency(p50 * 20, batch=32)])  # fmt: skip


def sample_report() -> Report:
    report = Report(
        created="2026-01-01T00:00:00+00:00", recipe=RecipeInfo(name="r", path="r.yaml", hash="abc"),
        environment={"cpu": {"model": "cpu", "isa": ["avx2"], "logical_cores": 2}, "packages": {"onnx": "1"}},
        baseline="fp32",
        targets=[TargetInfo(name="t", runtime="onnxruntime", device="cpu", threads=1, batch_sizes=[1, 32],
                            protocol={"warmup": 1, "min_iterations": 10, "min_seconds": 1, "rounds": 2})],
        variants=[variant("fp32", 98.0, 2.0, 4_000_000), variant("int8", 97.5, 0.5, 1_000_000, "fp32"),
                  variant("worse", 97.0, 1.0, 1_000_000, "fp32")],
    )  # fmt: skip
    mark_fronts(report)
    return report


def test_front_keeps_only_undominated_points():
    assert front({"a": (98, 2.0), "b": (97.5, 0.5), "c": (97, 1.0), "d": (98, 2.0)}) == {"a", "b", "d"}


def test_mark_fronts_per_target():
    report = sample_report()
    assert {v.name: v.pareto["t"] for v in report.variants} == {"fp32": True, "int8": True, "worse": False}


def test_markdown_table_has_ratios_against_the_baseline():
    md = to_markdown(sample_report())
    assert "| int8 | fp32 | 1.000 | 4.00× | 97.50 | -0.50 | 0.500 | 0.550 | 4.00× | – | yes |" in md
    assert "### Batch size 32" in md and "## Environment" in md


def test_report_round_trips_through_json_and_plots(tmp_path):
    report = sample_report()
    report.save(tmp_path / "report.json")
    again = Report.load(tmp_path / "report.json")
    assert again == report
    (path,) = write_plots(again, tmp_path)
    assert path == tmp_path / "pareto-t.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parent_is_the_closest_ancestor_not_a_sibling():
    from compress.pipeline import parent_variant

    fp32, int8, int8_ov = ["train", "export"], ["train", "export", "quantize"], ["train", "export", "quantize-ov"]
    qat = ["train", "qat"]
    kd, ce = ["train", "prune", "ft-kd", "export-kd"], ["train", "prune", "ft-ce", "export-ce"]
    kd_int8 = [*kd, "quantize-kd"]
    entry = {"export", "export-kd", "export-ce", "qat"}
    earlier = [("fp32", fp32), ("int8", int8), ("kd", kd)]
    assert parent_variant(fp32, [], entry) is None
    assert parent_variant(int8, earlier[:1], entry) == "fp32"
    assert parent_variant(int8_ov, earlier[:2], entry) == "fp32"  # a sibling quantization is not a parent
    assert parent_variant(qat, earlier[:2], entry) == "fp32"
    assert parent_variant(kd, earlier[:2], entry) == "fp32"
    assert parent_variant(ce, earlier, entry) == "fp32"
    assert parent_variant(kd_int8, earlier, entry) == "kd"


def test_knee_size_objective_and_fronts_across_targets():
    from compress.report.pareto import knee

    points = {"slow": (99.0, 10.0), "knee": (98.8, 2.0), "fast": (90.0, 1.0)}
    assert front(points) == {"slow", "knee", "fast"} and knee(points, front(points)) == "knee"
    # With size as a third objective, a slower but smaller variant joins the front.
    assert front({"a": (98, 1.0, 4e6), "b": (98, 2.0, 1e6)}) == {"a", "b"}
    assert front({"a": (98, 1.0), "b": (98, 2.0)}) == {"a"}
    report = sample_report()
    p90 = report.front("t", "p90")
    assert p90 is not None and set(p90.members) == {"fp32", "int8"}
    across = report.front("*")
    assert (across.members, across.knee) == (["fp32@t", "int8@t"], "fp32@t")
    sized = report.front("t", "p50", with_size=True)
    assert (sized.members, sized.knee) == (["fp32", "int8"], "fp32")  # of two members, the more accurate
    assert "- Front (accuracy vs p50 vs size): fp32, int8; knee: **fp32**" in to_markdown(report)
    report.variant("worse").size_bytes = 500_000  # slower than int8 but now smaller: on the sized front only
    mark_fronts(report)
    assert report.front("t", "p50", with_size=True).members == ["fp32", "int8", "worse"]
    assert report.front("t", "p50").members == ["fp32", "int8"]


def test_terminal_table_keeps_bracketed_sweep_names():
    from rich.console import Console

    from compress.report.render import print_tables

    report = sample_report()
    report.variants[1].name = "int8[ratio=0.3]"
    console = Console(record=True, width=200)
    print_tables(report, console)
    assert "int8[ratio=0.3]" in console.export_text()


def test_accuracy_control_is_listed_and_an_unmet_budget_warned():
    from compress.report.diagnose import budget_warnings

    report = sample_report()
    steps = [{"float_layer": None, "val_accuracy": 10.0, "p50_ms": 0.15},
             {"float_layer": "/4/Conv", "sensitivity": 88.5, "val_accuracy": 98.1, "p50_ms": 0.17}]  # fmt: skip
    met = {"fp32_val_accuracy": 98.5, "budget_points": 0.5, "met": True, "steps": steps, "float_nodes": ["/4/Conv"],
           "ranked_by": "drop quantized alone"}  # fmt: skip
    report.variants[1].details.update(accuracy_control=met, method="ptq", backend="onnxruntime", quantized_ops=11,
                                      float_nodes=["/4/Conv"])  # fmt: skip
    report.variants[2].details["accuracy_control"] = {**met, "met": False, "steps": steps[:1], "float_nodes": []}
    md = to_markdown(report)
    assert f"  - precision map: 11 layer(s) in {report.variants[1].precision}, 1 in float: `/4/Conv`" in md
    assert "accuracy budget: 0.5 points on val (fp32 98.5): met with 1 layer(s) in float" in md
    assert "`/4/Conv` back to float (sensitivity 88.5): 98.1 on val, p50 0.17 ms" in md
    assert "**not met** with 0 layer(s) in float" in md
    assert budget_warnings(report) == [
        "worse did not meet its 0.5-point accuracy budget on the validation split; it is the most accurate "
        "model found (0 layer(s) in float)"
    ]


def test_a_budget_met_on_validation_but_missed_on_test_is_warned_per_target():
    from compress.report.diagnose import budget_warnings

    report = sample_report()
    met = {"fp32_val_accuracy": 98.5, "budget_points": 0.5, "met": True, "steps": [], "float_nodes": []}
    report.variants[1].details["accuracy_control"] = met  # int8: 97.5 against fp32's 98.0 on test: within
    report.variants[2].details["accuracy_control"] = met  # worse: 97.0, a whole point below
    assert budget_warnings(report) == [
        "worse met its 0.5-point accuracy budget on the validation split but lost 1.00 points on test on t"
    ]


def test_report_files_honour_the_umask(tmp_path):
    import os
    import stat

    from compress.report.schema import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "shared.json", "{}")
        os.umask(0o077)
        write_atomic(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["a$^$b", "cost $5 or $6", "$\\foo$", "x$_$"])
def test_dollar_signs_in_names_render_literally_in_plots(tmp_path, name):
    """Matplotlib reads text between two `$` as math; a variant named so must still plot, as written."""
    report = sample_report()
    report.variants[1].name = name
    report.variants[1].details["arch"] = f"file.py:{name}"
    mark_fronts(report)
    (path,) = write_plots(report, tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for v in report.variants:  # without accuracy: the latency-only plot
        v.accuracy, v.accuracy_per_target = None, []
    (path,) = write_plots(report, tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from compress.report.plots import label

    assert label(name).count("\\$") == name.count("$")


def test_compress_report_renders_a_variant_with_dollars(tmp_path):
    report = sample_report()
    report.variants[1].name = "int8 $x^$"
    mark_fronts(report)
    report.save(tmp_path / "report.json")
    result = cli("report", str(tmp_path))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "pareto-t.png").is_file() and "int8 $x^$" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        ("[" * 100_000, "nested too deeply"),
        ('{"schema_version": 1}', "created: Field required"),
        ("[]", "Input should be a valid dictionary"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_report_load_says_why_a_file_is_not_a_report(tmp_path, text, expected):
    from compress.errors import CompressError, ExitCode

    path = tmp_path / "report.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CompressError) as info:
        Report.load(path)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert info.value.message.startswith(f"{path} is not a compress report: ") and expected in info.value.message
    result = cli("report", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr and expected in result.stderr, result.stderr


def test_a_budget_within_a_few_validation_examples_is_warned_and_a_fallback_is_rendered():
    from compress.report.diagnose import budget_warnings

    report = sample_report()
    met = {"fp32_val_accuracy": 98.5, "budget_points": 0.5, "met": True, "steps": [], "float_nodes": []}
    report.variants[1].details["accuracy_control"] = {**met, "val_examples": 270}  # one example: 0.37 points
    report.variants[2].details["accuracy_control"] = {**met, "val_examples": 1000, "budget_points": 1.5}
    report.variants[1].details["fallback"] = {"method": "qat", "reason": "PTQ kept 8 layer(s) in float",
                                              "ptq_val_accuracy": 98.1, "qat_val_accuracy": 98.3, "used": "qat"}  # fmt: skip
    warnings = budget_warnings(report)
    assert [w.split(":")[0] for w in warnings] == ["int8"], warnings
    assert "worth fewer than 3 of the 270 validation examples (one is 0.37 points)" in warnings[0]
    assert ("  - fallback: PTQ kept 8 layer(s) in float; QAT 98.3 on val against PTQ's 98.1: **qat** kept"
            in to_markdown(report))  # fmt: skip

    from compress.report.schema import SearchResult
    from compress.report.searched import flags

    report.search = SearchResult(target="t", batch_size=1, minimize="p50", limits={"max_accuracy_drop": 0.5},
                                 sampler="tpe", val_examples=270)  # fmt: skip
    assert flags(report)[0].startswith("max_accuracy_drop: its 0.5-point budget is worth fewer than 3 of the 270")
    report.search.val_examples = 1000
    assert flags(report) == []


def test_held_out_sets_are_tabled_and_a_drop_that_does_not_carry_over_is_flagged():
    from compress.report.diagnose import held_out_warnings

    report = sample_report()
    scores = {"fp32": (98.0, 97.0), "int8": (97.5, 96.5), "worse": (97.0, 90.0)}  # (test, other text)
    for v in report.variants:
        v.accuracy.held_out = {"other": scores[v.name][1]}
    md = to_markdown(report)
    assert "| variant | accuracy | accuracy on other |" in md
    assert "| worse | 97.00 (-1.00) | 90.00 (-7.00) |" in md
    assert held_out_warnings(report) == [
        "worse on t: accuracy fell 7.00 points on held-out other but 1.00 on test: it fits the data's text and "
        "may not carry over to other text; train on broader text (data.train_text)"
    ]


def test_a_file_that_loses_far_more_on_one_runtime_than_on_another_is_flagged():
    """The same file scored on two targets: a drop that belongs to one runtime's handling of it (a
    static QDQ ViT kept its accuracy in ONNX Runtime and lost 43 points in OpenVINO) is flagged."""
    from compress.report.diagnose import runtime_warnings

    report = sample_report()
    scores = {"fp32": (98.0, 97.9), "int8": (97.5, 53.3), "worse": (97.0, 96.8)}  # (t, ov)
    for v in report.variants:
        ov = v.accuracy.model_copy(update={"value": scores[v.name][1], "runtime": "openvino", "target": "ov"})
        v.accuracy_per_target.append(ov)
    quantized = report.variant("int8")
    quantized.stages, quantized.precision, quantized.details = (
        ["train", "export", "quantize"],
        "int8",
        {"method": "ptq", "backend": "onnxruntime"},
    )
    assert runtime_warnings(report) == [
        "int8 lost 44.60 points on ov but 0.50 on t (its one file, each against fp32 on that target): the "
        "runtimes compute it differently, so deploy it only where it kept its accuracy, or quantize for ov "
        "(for: [ov] in stage 'quantize')"
    ]
    report.variant("int8").accuracy_per_target[1].value = 96.6  # 1.3 points against 0.5: within one point
    assert runtime_warnings(report) == []
