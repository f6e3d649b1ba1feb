"""TensorRT: command building, engine caching and trtexec output parsing run here; building and
running real engines needs an NVIDIA GPU with TensorRT and skips otherwise."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compress.runtimes import tensorrt as trt_rt
from compress.runtimes import trtexec
from compress.targets import TargetSpec
from tests.conftest import write_mlp_onnx

# A performance summary in trtexec's documented format (TensorRT 10), with made-up numbers.
TRTEXEC_LOG = textwrap.dedent("""\
    &&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine
    [11/26/2026-09:00:00] [I] === Performance summary ===
    [11/26/2026-09:00:00] [I] Throughput: 2415.5 qps
    [11/26/2026-09:00:00] [I] Latency: min = 0.401 ms, max = 0.912 ms, mean = 0.4133 ms, median = 0.4102 ms, percentile(90%) = 0.4211 ms, percentile(95%) = 0.4301 ms, percentile(99%) = 0.5012 ms
    [11/26/2026-09:00:00] [I] Enqueue Time: min = 0.05 ms, max = 0.2 ms, mean = 0.061 ms, median = 0.06 ms, percentile(90%) = 0.07 ms, percentile(95%) = 0.08 ms, percentile(99%) = 0.1 ms
    [11/26/2026-09:00:00] [I] H2D Latency: min = 0.011 ms, max = 0.05 ms, mean = 0.0132 ms, median = 0.0128 ms, percentile(90%) = 0.014 ms, percentile(95%) = 0.015 ms, percentile(99%) = 0.02 ms
    [11/26/2026-09:00:00] [I] GPU Compute Time: min = 0.38 ms, max = 0.89 ms, mean = 0.391 ms, median = 0.389 ms, percentile(90%) = 0.398 ms, percentile(95%) = 0.405 ms, percentile(99%) = 0.47 ms
    [11/26/2026-09:00:00] [I] D2H Latency: min = 0.004 ms, max = 0.02 ms, mean = 0.0051 ms, median = 0.005 ms, percentile(90%) = 0.006 ms, percentile(95%) = 0.007 ms, percentile(99%) = 0.009 ms
    [11/26/2026-09:00:00] [I] Total Host Walltime: 3.0012 s
    [11/26/2026-09:00:00] [I] Total GPU Compute Time: 2.8401 s
    &&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine
    """)

# TensorRT 8.4 (JetPack 5.0) printed only the 99th percentile.
TRTEXEC_84_LOG = textwrap.dedent("""\
    &&&& RUNNING TensorRT.trtexec [TensorRT v8401] # /usr/src/tensorrt/bin/trtexec
    [I] === Performance summary ===
    [I] Throughput: 716.6 qps
    [I] Latency: min = 1.34 ms, max = 1.56 ms, mean = 1.38 ms, median = 1.37 ms, percentile(99%) = 1.55 ms
    [I] GPU Compute Time: min = 1.3 ms, max = 1.5 ms, mean = 1.35 ms, median = 1.34 ms, percentile(99%) = 1.52 ms
    """)


def test_performance_summary_is_parsed():
    s = trt_rt.parse_summary(TRTEXEC_LOG)
    assert s["throughput_qps"] == 2415.5 and s["tensorrt"] == "10.3.0"
    assert s["latency"] == {"min": 0.401, "max": 0.912, "mean": 0.4133, "median": 0.4102, "p90": 0.4211,
                            "p95": 0.4301, "p99": 0.5012}  # fmt: skip
    assert s["gpu_compute"]["median"] == 0.389 and s["h2d"]["p99"] == 0.02 and s["d2h"]["mean"] == 0.0051
    assert (
        s["enqueue"]["max"] == 0.2 and s["total_host_walltime_s"] == 3.0012 and s["total_gpu_compute_time_s"] == 2.8401
    )
    old = trt_rt.parse_summary(TRTEXEC_84_LOG)
    assert old["tensorrt"] == "8.4.1" and old["latency"]["p99"] == 1.55 and "p90" not in old["latency"]


def test_versions_and_exported_times_and_outputs():
    assert trt_rt.parse_version("[TensorRT v8601]") == "8.6.1"
    assert trt_rt.parse_version("[TensorRT v100200]") == "10.2.0"
    assert trt_rt.parse_version("no version") is None
    times = [{"startEnqMs": 0, "latencyMs": 0.5, "computeMs": 0.4}, {"startH2DMs": 1.0, "endD2HMs": 1.7}]
    assert trt_rt.parse_times(times) == [0.5, pytest.approx(0.7)]
    (out,) = trt_rt.parse_outputs([{"name": "y", "dimensions": "2x3", "values": [0, 1, 2, 3, 4, 5]}])
    assert out.shape == (2, 3) and out[1, 2] == 5


def test_build_command_covers_precision_qdq_workspace_and_profiles():
    shapes = {"input_ids": (128,), "attention_mask": (128,)}
    args = trt_rt.build_command("trtexec", Path("m.onnx"), Path("m.engine"), "fp16", True, 2048, shapes, [1, 8, 64])
    assert args[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert "--fp16" in args and "--int8" in args and "--memPoolSize=workspace:2048" in args
    assert "--skipInference" in args
    assert "--minShapes=input_ids:1x128,attention_mask:1x128" in args
    assert "--optShapes=input_ids:1x128,attention_mask:1x128" in args
    assert "--maxShapes=input_ids:64x128,attention_mask:64x128" in args
    plain = trt_rt.build_command("trtexec", Path("m.onnx"), Path("e"), "fp32", False, 64, {}, [1])
    assert not any(a.startswith(("--fp16", "--int8", "--minShapes")) for a in plain)
    best = trt_rt.build_command("t", Path("m"), Path("e"), "best", True, 64, {"x:0": (3,)}, [1], ["--sparsity=enable"])
    assert best.count("--int8") == 0 and "--best" in best and "--minShapes='x:0':1x3" in best
    assert best[-1] == "--sparsity=enable"
    bench = trt_rt.benchmark_command("trtexec", Path("e"), {"x": (1, 3)}, 200, 2.5, Path("t.json"))
    assert "--iterations=200" in bench and "--duration=3" in bench and "--exportTimes=t.json" in bench
    assert "--shapes=x:1x3" in bench and "--useSpinWait" in bench


def test_engine_key_changes_with_what_changes_the_engine(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph QuantizeLinear")
    key = trt_rt.engine_key(onnx, "fp16", "10.3.0", {"x": (3,)}, 1024, [])
    assert key == trt_rt.engine_key(onnx, "fp16", "10.3.0", {"x": (3,)}, 1024, [])
    others = [("fp32", "10.3.0", {"x": (3,)}), ("fp16", "10.4.0", {"x": (3,)}), ("fp16", "10.3.0", {"x": (4,)})]
    assert all(trt_rt.engine_key(onnx, p, v, s, 1024, []) != key for p, v, s in others)
    onnx.write_bytes(b"graph 2")
    assert trt_rt.engine_key(onnx, "fp16", "10.3.0", {"x": (3,)}, 1024, []) != key
    assert not trt_rt.is_quantized(onnx)


def test_engine_cache_builds_once_and_never_leaves_half_an_engine(tmp_path):
    builds = []

    def build(out: Path) -> None:
        builds.append(out)
        out.write_bytes(b"engine")

    path, reused = trt_rt.cached_engine(tmp_path, "k", build)
    assert not reused and path.read_bytes() == b"engine"
    assert trt_rt.cached_engine(tmp_path, "k", build) == (path, True) and len(builds) == 1

    def failing(out: Path) -> None:
        out.write_bytes(b"half")
        raise trt_rt.TensorRTError("builder crashed")

    with pytest.raises(trt_rt.TensorRTError):
        trt_rt.cached_engine(tmp_path, "k2", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.engine"]


FAKE_TRTEXEC = '''\
#!{python}
"""Stands in for trtexec on machines without a GPU: an 'engine' is the ONNX path, run by ONNX Runtime."""
import json, sys
import numpy as np, onnxruntime as ort
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec")
if "saveEngine" in args:
    open(args["saveEngine"], "w").write(args["onnx"]); open(args["saveEngine"].rsplit("/", 1)[0] + "/build-args.json", "w").write(json.dumps(sys.argv))
    sys.exit(0)
if "help" in args:
    sys.exit(0)
session = ort.InferenceSession(open(args["loadEngine"]).read(), providers=["CPUExecutionProvider"])
if "exportProfile" in args:  # every node of the ONNX file as a "layer" at 0.01 ms per call
    import onnx
    nodes = onnx.load(open(args["loadEngine"]).read()).graph.node
    runs = int(args["iterations"])
    json.dump([{{"count": runs}}] + [{{"name": n.name or "/mlp/" + n.op_type, "timeMs": 0.01 * runs, "averageMs": 0.01, "medianMs": 0.01}}
                                   for n in nodes], open(args["exportProfile"], "w"))
    sys.exit(0)
shapes = dict((s.split(":")[0], [int(d) for d in s.split(":")[1].split("x")]) for s in args["shapes"].split(","))
if "loadInputs" in args:
    feeds = {{}}
    for spec in args["loadInputs"].split(","):
        name, path = spec.split(":", 1)
        feeds[name] = np.fromfile(path, dtype=np.float32).reshape(shapes[name])
    out = session.run(None, feeds)[0]
    json.dump([{{"name": "y", "dimensions": "x".join(map(str, out.shape)), "values": out.ravel().tolist()}}],
              open(args["exportOutput"], "w"))
else:
    json.dump([{{"latencyMs": 0.4 + 0.001 * (i % 3)}} for i in range(int(args["iterations"]))], open(args["exportTimes"], "w"))
    print("[I] === Performance summary ===")
    print("[I] Throughput: 2400 qps")
    print("[I] GPU Compute Time: min = 0.3 ms, max = 0.5 ms, mean = 0.35 ms, median = 0.35 ms, percentile(99%) = 0.45 ms")
'''


def test_runtime_builds_caches_evaluates_and_times_through_a_fake_trtexec(tmp_path, monkeypatch):
    """The TensorRT runtime's trtexec path end to end, with a fake trtexec (no GPU here) that runs
    the model with ONNX Runtime, so outputs can be checked against the real model's."""
    import onnxruntime as ort

    from compress.agent.job import predict

    model = write_mlp_onnx(tmp_path / "mlp.onnx")
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setattr(trt_rt, "python_api_available", lambda: False)
    target = TargetSpec(name="gpu", runtime="tensorrt", device="gpu", precision="fp16", batch_sizes=[1, 4],
                        eval_batch_size=16, tensorrt={"trtexec": str(fake), "engine_cache": str(tmp_path / "engines")},
                        protocol={"warmup": 1, "min_iterations": 50, "min_seconds": 0.1, "max_seconds": 5})  # fmt: skip
    runtime = trt_rt.TensorRTRuntime(target, {"x": (64,)})
    assert runtime.mode() == "trtexec" and runtime.versions() == {"tensorrt": "10.3.0", "tensorrt_mode": "trtexec"}
    session = runtime.load(model, 1)
    assert session.precision == "fp16"
    (engine,) = (tmp_path / "engines").glob("*.engine")
    build_args = json.loads((tmp_path / "engines" / "build-args.json").read_text())
    assert "--fp16" in build_args and "--maxShapes=x:16x64" in build_args
    x = np.random.default_rng(1).standard_normal((20, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(predict(session, {"x": x}, 16), expected, rtol=1e-5)
    samples, capped, summary = session.benchmark({"x": x[:4]}, SimpleNamespace(**target.protocol.model_dump()))
    assert len(samples) == 50 and not capped and summary["gpu_compute"]["median"] == 0.35
    layers = session.profile({"x": x[:1]}, 20)  # through the stand-in: the ONNX nodes at 0.01 ms each
    assert [(n["op"], n["ms"]) for n in layers] == [("MatMul", 0.01), ("Relu", 0.01)]
    runtime.load(model, 1)  # a second load reuses the cached engine
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1


def test_per_layer_profile_is_parsed_with_op_types_from_layer_names():
    """trtexec's --exportProfile format (TensorRT 8 and 10), with made-up times."""
    data = [{"count": 50},
            {"name": "Reformatting CopyNode for Input Tensor 0 to /stem/Conv + /stem/Relu", "timeMs": 0.5,
             "averageMs": 0.01, "medianMs": 0.01, "percentage": 5.0},
            {"name": "/stem/Conv + /stem/Relu", "timeMs": 5.0, "averageMs": 0.1, "percentage": 50.0},
            {"name": "/blocks/blocks.0/attn/MatMul_1", "timeMs": 3.0, "averageMs": 0.06},
            {"name": "{ForeignNode[/blocks/blocks.1/attn/MatMul.../Softmax]}", "timeMs": 1.0},
            {"name": "PWN(/act/Sigmoid, /act/Mul)", "timeMs": 0.5, "averageMs": 0.01}]  # fmt: skip
    assert trtexec.parse_profile(data) == [
        {"name": data[1]["name"], "op": "Reformat", "ms": 0.01},
        {"name": "/stem/Conv + /stem/Relu", "op": "Conv+Relu", "ms": 0.1},
        {"name": "/blocks/blocks.0/attn/MatMul_1", "op": "MatMul", "ms": 0.06},
        {"name": data[4]["name"], "op": "ForeignNode", "ms": 0.02},  # timeMs / count when no average
        {"name": data[5]["name"], "op": "PointWise", "ms": 0.01},
    ]
    command = trtexec.profile_command("trtexec", Path("m.engine"), {"x": (1, 64)}, 30, Path("p.json"))
    assert {
        "--dumpProfile",
        "--separateProfileRun",
        "--iterations=30",
        "--exportProfile=p.json",
        "--shapes=x:1x64",
    } <= set(command)


def test_int8_precision_needs_a_quantized_model(tmp_path, monkeypatch):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"float graph")
    monkeypatch.setattr(trt_rt, "python_api_available", lambda: False)
    monkeypatch.setattr(trt_rt, "find_trtexec", lambda command="trtexec": "/bin/true")
    runtime = trt_rt.TensorRTRuntime(TargetSpec(name="g", runtime="tensorrt", device="gpu", precision="int8"))
    with pytest.raises(trt_rt.TensorRTError, match="needs a quantized"):
        runtime.engine(onnx)


def test_targets_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="device gpu or jetson"):
        TargetSpec(name="t", runtime="tensorrt")
    with pytest.raises(ValidationError, match="only apply to runtime tensorrt"):
        TargetSpec(name="t", runtime="onnxruntime", tensorrt={})
    with pytest.raises(ValidationError, match="is for runtime tensorrt"):
        TargetSpec(name="t", runtime="openvino", precision="int8")


def test_missing_tensorrt_here_is_exit_3_with_the_extra_to_install(monkeypatch):
    from compress.errors import RuntimeMissingError
    from compress.runtimes import check_available

    monkeypatch.setattr(trt_rt, "python_api_available", lambda: False)
    monkeypatch.setattr(trt_rt, "find_trtexec", lambda command="trtexec": None)
    with pytest.raises(RuntimeMissingError) as info:
        check_available([TargetSpec(name="gpu", runtime="tensorrt", device="gpu")])
    assert "compress-edge[tensorrt]" in info.value.hint


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not trt_rt.python_api_available(), reason="needs an NVIDIA GPU with TensorRT and CUDA torch")
def test_real_engine_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    from compress.agent.job import predict

    model = write_mlp_onnx(tmp_path / "mlp.onnx")
    target = TargetSpec(name="gpu", runtime="tensorrt", device="gpu", precision="fp32", batch_sizes=[1],
                        eval_batch_size=8, tensorrt={"engine_cache": str(tmp_path / "engines")})  # fmt: skip
    session = trt_rt.TensorRTRuntime(target, {"x": (64,)}).load(model, 1)
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(predict(session, {"x": x}, 8), expected, rtol=1e-3, atol=1e-4)
