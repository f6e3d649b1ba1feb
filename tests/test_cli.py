"""The `compress` command through its real console-script entry point."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_RECIPE, TINY_TARGET, cli

COMPRESS = str(Path(sys.executable).with_name("compress"))


def compress(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([COMPRESS, *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=600)


@pytest.mark.slow
def test_run_tiny_recipe_end_to_end(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    result = compress("run", str(tiny_recipe), "--output", str(out), "--set", "stages[train].epochs=1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["recipe"]["name"] == "tiny" and len(report["recipe"]["hash"]) == 16
    assert isinstance(report["environment"]["cpu"]["isa"], list)
    assert report["environment"]["packages"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert report["baseline"] == "fp32"
    variants = {v["name"]: v for v in report["variants"]}
    assert set(variants) == {"fp32", "int8"}
    assert variants["int8"]["parent"] == "fp32" and variants["int8"]["stages"] == ["train", "export", "quantize"]
    for v in variants.values():
        assert (out / v["path"]).is_file() and v["size_bytes"] == (out / v["path"]).stat().st_size
        assert v["accuracy"]["metric"] == "accuracy" and v["accuracy"]["runtime"] == "onnxruntime"
        assert v["accuracy"]["split"] == "test" and 0 <= v["accuracy"]["value"] <= 100
        assert [lat["batch_size"] for lat in v["latency"]] == [1, 4]
        for lat in v["latency"]:
            assert lat["target"] == "tiny-ort" and lat["threads"] == 1 and lat["iterations"] >= 10
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    # On the front (accuracy vs p50 at batch 1) unless the other variant is as good in both and better in one.
    point = {n: (v["accuracy"]["value"], -v["latency"][0]["p50_ms"]) for n, v in variants.items()}
    for name, v in variants.items():
        dominated = any(p != point[name] and min(a - b for a, b in zip(p, point[name], strict=True)) >= 0
                        for p in point.values())  # fmt: skip
        assert v["pareto"]["tiny-ort"] is not dominated, (name, point)
    assert variants["int8"]["size_bytes"] < variants["fp32"]["size_bytes"]  # tiny: graph overhead dominates
    assert variants["int8"]["details"]["activations"] == "uint8"
    assert "| int8 | fp32 |" in (out / "report.md").read_text()
    assert (out / "pareto-tiny-ort.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "int8" in result.stdout  # the table printed at the end

    again = compress("run", str(tiny_recipe), "--output", str(out), "--set", "stages[train].epochs=1")
    assert again.returncode == 0
    assert "train: reusing cached result" in again.stderr and "quantize: reusing cached result" in again.stderr

    gated = compress("run", str(tiny_recipe), "--output", str(out), "--set", "stages[train].epochs=1",
                     "--set", "gates={max_size_mb: 0.001}")  # fmt: skip
    assert gated.returncode == 1 and "FAIL" in gated.stdout

    rerender = compress("report", str(out))
    assert rerender.returncode == 0 and "int8" in rerender.stdout


def test_bad_recipe_exits_2_without_traceback(write):
    path = write("bad.yaml", "name: bad\nmodel: {arch: resnet}\nstages:\n  - type: trian\n")
    result = compress("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:4:" in result.stderr and "did you mean 'train'" in result.stderr


def test_run_with_bad_override_exits_2(tiny_recipe):
    result = compress("run", str(tiny_recipe), "--set", "stages[train].epocs=1")
    assert result.returncode == 2 and "did you mean 'epochs'" in result.stderr


def test_validate_and_schema():
    result = compress("validate", "recipes/quickstart.yaml")
    assert result.returncode == 0 and "valid" in result.stdout
    schema = json.loads(compress("schema").stdout)
    assert "stages" in schema["properties"] and schema["additionalProperties"] is False


def test_locked_output_folder_exits_5(tiny_recipe, tmp_path):
    from compress.lock import run_lock

    out = tmp_path / "out"
    with run_lock(out):  # this test process holds the folder
        result = compress("run", str(tiny_recipe), "--output", str(out))
    assert result.returncode == 5 and f"another compress run (PID {os.getpid()})" in result.stderr


def test_report_on_a_folder_without_report_exits_2(tmp_path):
    result = compress("report", str(tmp_path))
    assert result.returncode == 2 and "report.json" in result.stderr


def test_import_compress_is_light():
    code = "import sys, compress; bad = {'torch', 'onnxruntime', 'onnx'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_setting_a_key_inside_a_scalar_is_a_located_error(tiny_recipe):
    result = cli("run", str(tiny_recipe), "--set", "name.foo=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--set name.foo=1: name: cannot set 'foo' inside a scalar value" in result.stderr


def test_bad_data_file_exits_2_naming_it(write, tmp_path):
    import numpy as np

    (tmp_path / "d.npz").write_text("not an archive")
    write("tiny-ort.yaml", TINY_TARGET)
    recipe = write("r.yaml", TINY_RECIPE.replace("  source: digits\n", "  source: npz\n  path: d.npz\n"))
    result = cli("run", str(recipe), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {tmp_path / 'd.npz'}: not an .npz archive" in result.stderr
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8)), y=np.arange(4) % 2)
    result = cli("run", str(recipe), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 2 and "at least 8 are needed" in result.stderr, result.stderr


def test_output_under_a_file_exits_2_before_any_work(tiny_recipe, tmp_path, mlp):
    (tmp_path / "somefile").write_text("x")
    for args in (["run", str(tiny_recipe)], ["profile", str(mlp), "-t", "cpu-onnxruntime"]):
        result = cli(*args, "-o", str(tmp_path / "somefile" / "out"), timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"output folder {tmp_path}/somefile/out: {tmp_path}/somefile is a file, not a folder" in result.stderr
        assert "data:" not in result.stderr  # nothing ran
    result = cli("run", str(tiny_recipe), "-o", str(tmp_path / "somefile"), timeout=60)
    assert result.returncode == 2 and "somefile is a file, not a folder" in result.stderr


def _limit_file_size():
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))


def test_a_failed_write_names_the_path_and_the_reason(tmp_path):
    from tests.test_report import sample_report

    sample_report().save(tmp_path / "report.json")
    result = cli("report", str(tmp_path), preexec_fn=_limit_file_size)
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: cannot write {tmp_path}/report.")
    assert "File too large" in result.stderr and len(result.stderr.splitlines()) <= 2


def test_a_full_disk_while_writing_the_step_summary_is_a_warning(tmp_path):
    from tests.test_report import sample_report

    sample_report().save(tmp_path / "report.json")
    result = cli(
        "gate", str(tmp_path / "report.json"), "--max-size-mb", "100", env={"GITHUB_STEP_SUMMARY": "/dev/full"}
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr  # the verdict decides
    assert (
        "warning: cannot append to $GITHUB_STEP_SUMMARY (/dev/full): cannot write /dev/full: No space left"
        in result.stderr
    )


def test_junit_file_under_a_file_exits_2(tmp_path):
    from tests.test_report import sample_report

    sample_report().save(tmp_path / "report.json")
    (tmp_path / "f").write_text("x")
    result = cli(
        "gate", str(tmp_path / "report.json"), "--max-size-mb", "100", "--junit", str(tmp_path / "f" / "j.xml")
    )
    assert result.returncode == 2 and f"{tmp_path}/f is a file, not a folder" in result.stderr, result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_exits_4(tmp_path):
    from tests.test_report import sample_report

    sample_report().save(tmp_path / "report.json")
    tmp_path.chmod(0o555)
    try:
        result = cli("report", str(tmp_path))
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode == 4 and "Permission denied" in result.stderr and "Traceback" not in result.stderr


def test_a_failed_cache_write_during_a_run_names_the_file(tiny_recipe, tmp_path):
    result = cli("run", str(tiny_recipe), "-o", str(tmp_path / "out"), preexec_fn=_limit_file_size)
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr
    assert f"error: cannot write {tmp_path}/out/cache/data-" in result.stderr and "File too large" in result.stderr


@pytest.mark.parametrize(
    ("target", "where", "expected"),
    [
        ("name: broken\nruntime: onnxruntime\nthreads: [oops\n", "broken.yaml:4:1", "not valid YAML"),
        ("name: broken\nruntime: onnxruntime\nthreads: 0\n", "broken.yaml:3:1: threads:", "greater than or equal to 1"),
        ("name: broken\nruntime: onnxrt\n", "broken.yaml:2:1: runtime:", "did you mean 'onnxruntime'"),
    ],
)
def test_validate_opens_every_named_target_file(write, target, where, expected):
    path = write("broken.yaml", target)
    recipe = write("r.yaml", TINY_RECIPE.replace("targets: [tiny-ort]", "targets: [broken]"))
    result = cli("validate", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    line = next(line for line in result.stderr.splitlines() if where in line)
    assert line.startswith(f"  - {path.parent}/{where}") and expected in line
