"""OpenVINO throughput targets: latency stays one request at a time, throughput is measured with
requests in parallel through OpenVINO's asynchronous queue (real OpenVINO)."""

from __future__ import annotations

import numpy as np
import pytest

from compress.artifact import Kind
from compress.measure.jobs import Deployable, Inputs, measure_target
from compress.targets import TargetSpec
from tests.conftest import write_mlp_onnx

pytestmark = pytest.mark.openvino
PROTOCOL = {"warmup": 1, "min_iterations": 10, "min_seconds": 0.2, "rounds": 1, "ci_target": 0}


def measure(tmp_path, **settings):
    model = write_mlp_onnx(tmp_path / "mlp.onnx")
    target = TargetSpec(name="ov", runtime="openvino", batch_sizes=[4], protocol=PROTOCOL, **settings)
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    results = measure_target(target, {"m": Deployable(model, Kind.ONNX, "fp32")}, Inputs({4: feeds}), None, print)
    assert results.error is None and not results.errors, results
    (lat,) = results.latency["m"]
    return model, lat


def test_a_throughput_target_measures_requests_in_parallel(tmp_path):
    import openvino as ov

    model, lat = measure(tmp_path, threads=2, streams=2, performance_hint="throughput")
    config = {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 2, "PERFORMANCE_HINT": "THROUGHPUT"}
    expected = ov.Core().compile_model(str(model), "CPU", config).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    assert expected >= 2 and lat.requests == expected
    assert lat.throughput > 0 and lat.throughput != pytest.approx(4 * 1000.0 / lat.mean_ms, rel=1e-6)


def test_a_latency_target_keeps_one_request(tmp_path):
    _, lat = measure(tmp_path)
    assert lat.requests is None and lat.throughput == pytest.approx(4 * 1000.0 / lat.mean_ms, rel=1e-3)
