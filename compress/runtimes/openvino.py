"""OpenVINO on the CPU, an Intel GPU or NPU (the target's `device`): runs ONNX files and OpenVINO IR
with fixed threads, streams and precision. A device OpenVINO does not find here is an error at
load, never a run on the CPU in its place.

OpenVINO's CPU plugin computes "fp32" models in bf16 by default on CPUs with AVX-512 BF16 or AMX;
this runtime always sets INFERENCE_PRECISION_HINT from the target and records the precision the
compiled model reports, so a report never calls a bf16 run fp32.

By default (a target's `shapes: static`) a model is compiled for each input shape it runs at, as a
deployment that knows its shapes does: the CPU plugin picks faster kernels for static shapes than
for a model compiled once for any batch and sequence length (INT8 Transformers most of all).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from compress.runtimes.base import Runtime, Session

PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
GENERATED = re.compile(r"Constant_\d+$")  # a name OpenVINO made up, not one from the model
DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}  # a target's device: OpenVINO's name for it
MAX_SHAPES = 8  # compiles kept per session; inputs of further shapes run on the dynamic compile
DRIVERS = {"GPU": "the Intel GPU compute runtime (OpenCL driver)", "NPU": "the Intel NPU driver"}


class OpenVINODeviceError(RuntimeError):
    pass


def check_device(core, device: str) -> None:
    """Refuse a device OpenVINO cannot see here (GPU.0 and GPU.1 are both GPU)."""
    found = core.available_devices
    if any(d == device or d.startswith(device + ".") for d in found):
        return
    raise OpenVINODeviceError(f"OpenVINO finds no {device} device here (available: {', '.join(found) or 'none'}): "
                              f"install {DRIVERS.get(device, 'its plugin')}, or set device: cpu")  # fmt: skip


def compile_config(core, device: str, threads: int, streams: int, hint: str, precision: str) -> dict:
    """The target's settings as OpenVINO properties; other devices than the CPU get those they
    can set (threads and pinning are the CPU plugin's)."""
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "PERFORMANCE_HINT": hint.upper(),
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
        "ENABLE_CPU_PINNING": False,
    }
    if device == "CPU":
        return config
    writable = {k for k, mode in core.get_property(device, "SUPPORTED_PROPERTIES").items() if mode == "RW"}
    return {k: v for k, v in config.items() if k in writable}


class OpenVINOSession(Session):
    def __init__(self, path: Path, threads: int, streams: int, hint: str, precision: str, device: str = "CPU",
                 shapes: str = "static") -> None:  # fmt: skip
        import openvino as ov

        core = ov.Core()
        check_device(core, device)
        model = core.read_model(str(path))
        self._core, self._model, self._device = core, model, device
        self._config = compile_config(core, device, threads, streams, hint, precision)
        self._parallel = hint == "throughput" or streams > 1  # latency stays one request; throughput uses many
        self._compiled = core.compile_model(model, device, self._config)
        fixed = all(i.get_partial_shape().is_static for i in model.inputs)
        self.shapes = "static" if fixed else shapes
        self._per_shape = shapes == "static" and not fixed  # a model of fixed shapes compiles once
        self._by_shape: dict[tuple, tuple] = {}  # input shapes -> (compiled model, its request)
        self.provider = ", ".join(self._compiled.get_property("EXECUTION_DEVICES"))
        self._request = self._compiled.create_infer_request()
        first = model.inputs[0].get_partial_shape()[0]
        self.input_names = [i.get_any_name() for i in model.inputs]
        self.fixed_batch = first.get_length() if first.is_static else None
        used = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.float_precision = {v: k for k, v in PRECISIONS.items()}.get(used, used)
        self.int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.precision = "int8" if self.int8 else self.float_precision

    def compiled_for(self, feeds: dict[str, np.ndarray], config: dict | None = None):
        """(compiled model, infer request) for these inputs: with static shapes, the model compiled
        for their shapes, once per shape (a model OpenVINO cannot reshape keeps its compile for any
        shape, and `shapes` says so); extra `config` compiles afresh (profiling)."""
        key = tuple((name, tuple(a.shape)) for name, a in sorted(feeds.items()))
        if config is None and key in self._by_shape:
            return self._by_shape[key]
        model = self._model
        if self._per_shape and len(self._by_shape) < MAX_SHAPES:
            try:
                model = self._model.clone()
                model.reshape({name: list(a.shape) for name, a in feeds.items()})
            except Exception:  # noqa: BLE001 - e.g. an op of the model that cannot take the shape
                model, self._per_shape = self._model, False
                self.shapes = "dynamic (OpenVINO could not reshape the model)"
        elif self._per_shape:  # more shapes than the session keeps compiled
            self.shapes = f"static for {MAX_SHAPES} input shapes, then dynamic"
        if config is None and model is self._model:
            return self._compiled, self._request
        compiled = self._core.compile_model(model, self._device, {**self._config, **(config or {})})
        found = compiled, compiled.create_infer_request()
        if config is None:
            self._by_shape[key] = found
        return found

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        compiled, request = self.compiled_for(feeds)
        result = request.infer(feeds)
        return [np.asarray(result[out]) for out in compiled.outputs]

    def throughput(self, feeds: dict[str, np.ndarray], seconds: float) -> tuple[float, int] | None:
        """Items per second through OpenVINO's asynchronous request queue, as many requests in flight
        as the compiled model says keep its streams busy, after one warm-up round."""
        if not self._parallel:
            return None
        import time

        import openvino as ov

        compiled = self.compiled_for(feeds)[0]
        jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = ov.AsyncInferQueue(compiled, jobs)
        for _ in range(jobs):
            queue.start_async(feeds)
        queue.wait_all()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async(feeds)  # waits for an idle request when all are busy
            done += 1
        queue.wait_all()
        batch = len(next(iter(feeds.values())))
        return batch * done / (time.perf_counter() - start), jobs

    def profile(self, feeds: dict[str, np.ndarray], runs: int) -> list[dict]:
        """The model compiled again with performance counters on (same settings and shapes); each
        request's counters cover its last call, so they are summed over the runs. Only executed
        nodes count."""
        import openvino as ov

        compiled, request = self.compiled_for(feeds, {"PERF_COUNT": True})
        request.infer(feeds)  # warm-up
        totals: dict[tuple[str, str], float] = {}
        for _ in range(runs):
            request.infer(feeds)
            for p in request.get_profiling_info():
                if p.status == ov.ProfilingInfo.Status.EXECUTED:
                    key = (p.node_name, p.node_type)
                    totals[key] = totals.get(key, 0.0) + p.real_time.total_seconds() * 1000.0
        names = output_layer_names(compiled)
        return [{"name": names.get(name, name), "op": op, "ms": ms / runs} for (name, op), ms in totals.items()]

    def layer_precisions(self, layer_type: str = "Convolution") -> dict[str, int]:
        """How many executed layers of a type run in each precision, e.g. {'u8': 12} for INT8 kernels."""
        counts: dict[str, int] = {}
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == layer_type:
                key = info["runtimePrecision"].astype(str)
                counts[key] = counts.get(key, 0) + 1
        return counts


def output_layer_names(compiled) -> dict[str, str]:
    """{layer name: its weights' name} for executed layers that carry a model output's name.

    OpenVINO's ONNX reader names the layer that computes a model output after the output (a
    classifier's last Gemm becomes "logits"), which says nothing of the module it belongs to; its
    weights keep the module's name (e.g. "head.weight"), so they name it instead."""
    outputs = {name for out in compiled.outputs for name in out.get_names()}
    names = {}
    for op in compiled.get_runtime_model().get_ops():
        if op.get_friendly_name() not in outputs:
            continue
        for value in op.input_values():
            source = value.get_node()
            name = source.get_friendly_name()
            if source.get_rt_info()["layerType"].astype(str) == "Const" and not GENERATED.match(name):
                names[op.get_friendly_name()] = name
                break
    return names


class OpenVINORuntime(Runtime):
    name = "openvino"
    package = "openvino"
    extra = "openvino"
    formats = ("onnx", "openvino")
    devices = tuple(DEVICES)
    int8_format = "nncf"
    shape_modes = ("static", "dynamic")
    channel_multiple = 16  # the CPU plugin's blocked layouts (nChw16c) on AVX-512

    @classmethod
    def int8_misfit(cls, quantization) -> str | None:
        if quantization.method == "dynamic":
            return ("OpenVINO has no fast path for ONNX Runtime's dynamic quantization (DynamicQuantizeLinear, "
                    "MatMulInteger): quantize with backend: openvino")  # fmt: skip
        return None

    def load(self, path: Path, threads: int) -> Session:
        t = self.target
        if t is None:
            return OpenVINOSession(path, threads, 1, "latency", "fp32")
        shapes = getattr(t, "shapes", None) or self.shape_modes[0]  # a job written by an older compress has none
        return OpenVINOSession(path, threads, t.streams, t.performance_hint, t.precision, DEVICES[t.device], shapes)

    def versions(self) -> dict[str, str]:
        import openvino as ov

        return {"openvino": ov.get_version()}
