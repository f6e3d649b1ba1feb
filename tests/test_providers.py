"""Execution providers (ONNX Runtime) and devices (OpenVINO): refused at load when they cannot fit,
refused when measuring when they cannot run here, and recorded with each latency when they ran."""

from __future__ import annotations

import json

import pytest

from compress.errors import RecipeError
from compress.report.schema import Latency
from compress.runtimes.onnxruntime import OnnxRuntime, ProviderError
from compress.targets import TargetSpec, load_target
from tests.conftest import TINY_TARGET, cli


def problems(write, text: str) -> list:
    with pytest.raises(RecipeError) as info:
        load_target(write("t.yaml", text))
    return info.value.problems


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_execution_provider_is_refused_for_other_runtimes_at_its_line(write):
    (found,) = problems(write, "name: t\nruntime: openvino\nexecution_provider: cuda\n")
    assert found.path == "execution_provider" and found.line == 3
    assert "only applies to runtime onnxruntime, not openvino" in found.message


def test_onnxruntime_on_a_gpu_needs_a_gpu_provider_and_the_other_way_round(write):
    (found,) = problems(write, "name: t\nruntime: onnxruntime\ndevice: gpu\n")
    assert "needs execution_provider: cuda or tensorrt" in found.message
    (found,) = problems(write, "name: t\nruntime: onnxruntime\nexecution_provider: tensorrt\n")
    assert found.line == 3 and "set device: gpu" in found.message
    assert TargetSpec(name="t", runtime="onnxruntime", device="gpu", execution_provider="cuda").device == "gpu"
    assert TargetSpec(name="t", runtime="onnxruntime", execution_provider="dnnl").execution_provider == "dnnl"


def test_tensorrt_refuses_the_npu_openvino_takes(write):
    (found,) = problems(write, "name: t\nruntime: tensorrt\ndevice: npu\n")
    assert "runs on device gpu or jetson, not npu" in found.message
    assert TargetSpec(name="t", runtime="openvino", device="npu").device == "npu"


CUDA_TARGET = TINY_TARGET.replace("name: tiny-ort", "name: ort-cuda\ndevice: gpu\nexecution_provider: cuda")


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDAExecutionProvider: nothing falls back")
def test_cuda_provider_on_a_machine_without_a_gpu_is_an_error_not_a_cpu_run(mlp):
    """ONNX Runtime quietly runs on the CPU when CUDA cannot load; the session is refused instead."""
    target = TargetSpec(name="g", runtime="onnxruntime", device="gpu", execution_provider="cuda")
    with pytest.raises(ProviderError) as info:
        OnnxRuntime(target).load(mlp, 1)
    message = str(info.value)
    assert "CUDAExecutionProvider" in message and "CPUExecutionProvider" in message
    assert "install onnxruntime-gpu" in message and "\n" not in message  # one line: reports keep the first


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDAExecutionProvider: nothing falls back")
def test_profile_without_a_gpu_reports_the_variant_unmeasured_and_exits_6(tmp_path, write, mlp):
    target = write("ort-cuda.yaml", CUDA_TARGET)
    result = cli("profile", str(mlp), "-t", str(target), "-o", str(tmp_path / "out"), "-q", timeout=300)
    assert result.returncode == 6, result.stderr
    (variant,) = json.loads((tmp_path / "out" / "report.json").read_text())["variants"]
    assert not variant["latency"]
    (error,) = variant["errors"]
    assert error.startswith("ort-cuda: onnxruntime could not run this model") and "onnxruntime-gpu" in error


def test_profile_records_the_cpu_provider_with_each_latency(tmp_path, write, mlp):
    target = write("tiny-ort.yaml", TINY_TARGET)
    result = cli("profile", str(mlp), "-t", str(target), "-o", str(tmp_path / "out"), "-q", timeout=300)
    assert result.returncode == 0, result.stderr
    (variant,) = json.loads((tmp_path / "out" / "report.json").read_text())["variants"]
    assert [x["provider"] for x in variant["latency"]] == ["CPUExecutionProvider"] * 2
    assert "Executed by: CPUExecutionProvider" in (tmp_path / "out" / "report.md").read_text()


def test_a_latency_without_a_provider_still_loads():
    fields = dict(target="t", runtime="onnxruntime", batch_size=1, threads=1, precision="fp32", p50_ms=1.0,
                  p90_ms=1.0, p99_ms=1.0, mean_ms=1.0, std_ms=0.0, min_ms=1.0, max_ms=1.0, iterations=5,
                  seconds=0.1, throughput=1000.0)  # fmt: skip
    assert Latency.model_validate(fields).provider is None


@pytest.mark.openvino
def test_openvino_records_its_device(mlp):
    from compress.runtimes.openvino import OpenVINORuntime

    session = OpenVINORuntime(TargetSpec(name="v", runtime="openvino")).load(mlp, 1)
    assert session.provider == "CPU"


@pytest.mark.openvino
def test_openvino_on_a_gpu_it_cannot_find_is_an_error_not_a_cpu_run(mlp):
    import openvino as ov

    from compress.runtimes.openvino import OpenVINODeviceError, OpenVINORuntime

    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU device")
    runtime = OpenVINORuntime(TargetSpec(name="v", runtime="openvino", device="gpu"))
    with pytest.raises(OpenVINODeviceError, match=r"no GPU device here \(available: CPU.*set device: cpu"):
        runtime.load(mlp, 1)
