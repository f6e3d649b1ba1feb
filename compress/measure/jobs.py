"""Measure deployed artifacts on a target: accuracy on the test split and latency per batch size.

Everything here runs the exported file in the target's runtime; the PyTorch module is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.agent import store as model_store
from compress.artifact import Kind
from compress.data import Splits
from compress.data.disk import allocate, write_at
from compress.errors import CompressError, StageError, TargetError
from compress.measure import local, remote
from compress.names import file_name
from compress.report.schema import Accuracy, Latency, TargetInfo, Variant
from compress.runtimes import runtime_class
from compress.runtimes.base import COMPUTED
from compress.targets import TargetSpec
from compress.tasks import Task


@dataclass(frozen=True)
class Deployable:
    """A variant's file as a runtime sees it."""

    path: Path
    kind: Kind  # ONNX or OPENVINO
    precision: str
    parts: list | None = None  # rules naming the model's parts, to measure where the time goes (agent.parts)

    @property
    def companions(self) -> list[Path]:
        return companions(self.path, self.kind)


def companions(path: Path, kind: Kind) -> list[Path]:
    """Files that travel with a model file (OpenVINO's weights beside the .xml)."""
    weights = path.with_suffix(".bin")
    return [weights] if kind == Kind.OPENVINO and weights.is_file() else []


@dataclass
class Inputs:
    """What a target runs: evaluation inputs with their labels (absent when profiling a bare model)
    and one batch of real inputs per batch size for timing."""

    batches: dict[int, dict[str, np.ndarray]]
    examples: Any = None  # the evaluation examples (a split's x, whose rows are read as needed)
    feeds: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None  # examples -> the runtime's named inputs
    labels: np.ndarray | None = None
    held_out: dict[str, np.ndarray] = field(default_factory=dict)  # name -> labels of its examples, after the test's

    @classmethod
    def from_splits(cls, splits: Splits, task: Task, batch_sizes: list[int]) -> Inputs:
        batches = {b: task.feeds(batch_of(splits.x_test, b)) for b in batch_sizes}
        examples = Rows([splits.x_test, *(x for x, _ in splits.held_out.values())])
        return cls(batches, examples, task.feeds, splits.y_test, {n: y for n, (_, y) in splits.held_out.items()})


class Rows:
    """Arrays read as one: the test split's rows, then each held-out set's."""

    def __init__(self, parts: list) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        pieces, offset = [], 0
        for part in self.parts:
            low, high = max(start - offset, 0), min(stop - offset, len(part))
            if low < high:
                pieces.append(np.asarray(part[low:high]))
            offset += len(part)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass
class TargetResults:
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    latency: dict[str, list[Latency]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # the device's state before / after, power
    error: str | None = None  # the whole target failed (e.g. its host was unreachable)
    # {variant: {batch: (every call's ms, each block's median)}}, kept when asked (a fleet pools them)
    samples: dict[str, dict[int, tuple[np.ndarray, list[float]]]] = field(default_factory=dict)


def measure_target(target: TargetSpec, models: dict[str, Deployable], inputs: Inputs, task: Task | None, log,
                   out: Path | None = None, keep_samples: bool = False) -> TargetResults:  # fmt: skip
    """Accuracy, then interleaved latency, of every model this target's runtime can run: here (in a
    child process, so a crashing runtime costs only the model it crashed on), or on the target's host
    over SSH. A target that fails as a whole comes back with `error` set."""
    runnable = {n: m for n, m in models.items() if runs(runtime_class(target.runtime), m)}
    with tempfile.TemporaryDirectory(prefix="compress-job-") as tmp:
        folder = Path(tmp)
        write_job(folder, target, runnable, inputs, copy_models=target.host is not None, keep_samples=keep_samples)
        try:
            raw = (remote if target.host else local).run_job(target, folder, log)
            results = collect(raw, folder, target, runnable, inputs, task, out)
        except TargetError as exc:
            results = TargetResults(error=f"{exc.message}; {exc.hint}" if exc.hint else exc.message)
    if results.error:
        log(f"warning: target {target.name} failed: {results.error}")
    for name, error in results.errors.items():
        log(f"warning: {name} on {target.name}: {error}")
    return results


def runs(runtime: type, model: Deployable) -> bool:
    """Whether a runtime can run a model: its file format, and a precision computed by the runtime
    (bf16) only where the runtime takes it. The others are left out, not failed."""
    return model.kind in runtime.formats and (model.precision not in COMPUTED or model.precision in runtime.precisions)


def write_job(folder: Path, target: TargetSpec, models: dict[str, Deployable], inputs: Inputs, copy_models: bool,
              keep_samples: bool = False) -> None:  # fmt: skip
    """The job folder the measuring program reads (see compress.agent.job)."""
    entries = {}
    for name, model in models.items():
        entries[name] = {"kind": model.kind, "precision": model.precision}
        if model.parts:
            entries[name]["parts"] = model.parts
        if copy_models:  # staged for the device's model store (see compress.agent.store); locally read in place
            stored = stage_model(model, folder / "models")
            entries[name].update(file=f"{remote.MODEL_STORE}/{stored}", sha256=stored.partition(".")[0])
        else:
            entries[name]["file"] = str(model.path.resolve())
    if inputs.examples is not None:
        write_eval_inputs(folder / "eval", inputs.examples, inputs.feeds)
    for batch, feeds in inputs.batches.items():
        np.savez(folder / f"batch{batch}.npz", **feeds)
    job = {"target": target.model_dump(exclude={"host", "hosts", "fleet"}), "models": entries, "samples": keep_samples,
           "eval": "eval" if inputs.examples is not None else None,
           "batches": {str(b): f"batch{b}.npz" for b in inputs.batches}}  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")


def write_eval_inputs(folder: Path, examples, feeds, rows: int = 256) -> None:
    """One .npy file per model input, written `rows` examples at a time, so a test split of any size
    never sits in memory (here or in the measuring program, which reads it back the same way)."""
    folder.mkdir()
    files = {}
    try:
        for start in range(0, len(examples), rows):
            for name, values in feeds(examples[start : start + rows]).items():
                if name not in files:
                    files[name] = allocate(folder / f"{name}.npy", (len(examples), *values.shape[1:]), values.dtype)
                fd, offset, row_bytes, dtype = files[name]
                write_at(fd, np.ascontiguousarray(values, dtype=dtype).tobytes(), offset + start * row_bytes)
    finally:
        for fd, *_ in files.values():
            os.close(fd)


def stage_model(model: Deployable, store: Path) -> str:
    """Copy a model (and companions) into `store` named by its content hash; returns the file name.
    A device keeps these, so an unchanged model is not sent again."""
    digest = model_store.digest(model.path)
    store.mkdir(exist_ok=True)
    for file in [model.path, *model.companions]:
        shutil.copyfile(file, store / f"{digest}{file.suffix}")
    return f"{digest}{model.path.suffix}"


def collect(raw: dict, folder: Path, target: TargetSpec, models: dict[str, Deployable], inputs: Inputs,
            task: Task | None, traces: Path | None = None) -> TargetResults:  # fmt: skip
    """The measuring program's result as report entries: outputs scored here, with the task's metric;
    whole profiles written under `traces` (the report folder) when given."""
    if raw.get("error"):  # the measuring program could not start (e.g. no such runtime on the device)
        return TargetResults(error=f"{target.host.label}: {raw['error']}" if target.host else raw["error"])
    results = TargetResults(versions=raw.get("versions", {}),
                            state={k: raw.get(k) for k in ("state_before", "state_after", "power")})  # fmt: skip
    for name, entry in raw["models"].items():
        if entry.get("error"):
            results.errors[name] = entry["error"]
            continue
        if entry.get("outputs") and task is not None:
            try:
                results.accuracy[name] = scored(np.load(folder / entry["outputs"]), inputs, task, target)
            except CompressError as exc:
                results.errors[name] = exc.message
                continue
        precision = entry.get("precision") or models[name].precision
        results.latency[name] = [
            Latency(target=target.name, runtime=target.runtime, batch_size=t["batch_size"], threads=target.threads,
                    precision=precision, provider=entry.get("provider"), shapes=t.get("shapes"),
                    runtime_summary=t.get("runtime_summary"), parts=t.get("parts"),
                    parts_profiled_ms=t.get("parts_profiled_ms"), layers=t.get("layers"),
                    profile_error=t.get("profile_error"), requests=t.get("requests"), **t["stats"])
            for t in entry["latency"]
        ]  # fmt: skip
        kept = {t["batch_size"]: (np.load(folder / t["samples"]), t["block_medians_ms"])
                for t in entry["latency"] if t.get("samples")}  # fmt: skip
        if kept:
            results.samples[name] = kept
        if entry.get("profile") and traces is not None:
            trace = write_trace(traces, name, target, entry["profile"])
            for lat in results.latency[name]:
                if lat.layers is not None:
                    lat.layers.trace = trace
    return results


TRACES = "profiles"  # the report folder's sub-folder of full profiles


def write_trace(out: Path, name: str, target: TargetSpec, profile: dict) -> str:
    """A model's whole profile on a target as profiles/VARIANT@TARGET.json; returns that path."""
    path = Path(TRACES) / f"{file_name(name)}@{file_name(target.name)}.json"
    (out / TRACES).mkdir(exist_ok=True)
    tmp = out / path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"variant": name, "target": target.name, "runtime": target.runtime,
                               "threads": target.threads, **profile}), encoding="utf-8")  # fmt: skip
    os.replace(tmp, out / path)
    return path.as_posix()


def scored(outputs: np.ndarray, inputs: Inputs, task: Task, target: TargetSpec) -> Accuracy:
    """The test split's score, with each held-out set's (their outputs follow the test split's)."""
    accuracy, start = score(outputs[: len(inputs.labels)], inputs.labels, task, target), len(inputs.labels)
    if inputs.held_out:
        accuracy.held_out = {}
    for name, labels in inputs.held_out.items():
        accuracy.held_out[name] = score(outputs[start : start + len(labels)], labels, task, target).value
        start += len(labels)
    return accuracy


def score(outputs: np.ndarray, labels: np.ndarray, task: Task, target: TargetSpec) -> Accuracy:
    """Score the test split's outputs with the task's metric."""
    if not np.isfinite(outputs).all():
        raise StageError(f"{target.runtime} produced NaN or infinite outputs for this model",
                         hint="the quantization scheme does not suit this runtime; try another backend or method")  # fmt: skip
    value, further = task.evaluate(outputs, labels)
    details = {k: round(v, 4) for k, v in further.items()} or None
    return Accuracy(metric=task.metric, value=round(value, 4), split="test",
                    runtime=target.runtime, target=target.name, samples=len(labels), details=details)  # fmt: skip


def random_inputs(models: dict[str, Deployable], target: TargetSpec, sequence_length: int = 128) -> Inputs:
    """Timing inputs for a bare model (no data): random values shaped by the first model's inputs,
    the batch dimension set per batch size and other free dimensions (sequence) to `sequence_length`."""
    specs = input_specs(next(iter(models.values())).path)
    rng = np.random.default_rng(0)

    def batch(b: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name, dtype, shape in specs:
            dims = [d if d is not None else (b if i == 0 else sequence_length) for i, d in enumerate(shape)]
            if np.issubdtype(dtype, np.integer):  # token ids (small, inside any vocabulary) or masks
                feeds[name] = np.ones(dims, dtype) if "mask" in name else rng.integers(0, 1000, dims).astype(dtype)
            else:
                feeds[name] = rng.standard_normal(dims).astype(dtype)
        return feeds

    return Inputs({b: batch(b) for b in target.batch_sizes})


def input_specs(path: Path) -> list[tuple[str, np.dtype, list[int | None]]]:
    """(name, dtype, shape with None for free dimensions) of a model file's inputs."""
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        return [(i.get_any_name(), np.dtype(i.get_element_type().to_dtype()),
                 [d.get_length() if d.is_static else None for d in i.get_partial_shape()]) for i in model.inputs]  # fmt: skip
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [(i.name, np.dtype(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)),
             [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim])
            for i in graph.input if i.name not in weights]  # fmt: skip


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` real test inputs (repeated when the split is smaller), contiguous."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch]) if reps > 1 else np.ascontiguousarray(x[:batch])


def target_warnings(infos: list[TargetInfo]) -> list[str]:
    """A target that measured nothing, and each board of a fleet that dropped out while others went on."""
    lines = [f"target {t.name} could not be measured: {t.error}" for t in infos if t.error]
    return lines + [f"target {t.name}: board {b.name} ({b.host}) dropped out: {b.error}; the other boards measured "
                    f"without it" for t in infos if not t.error for b in t.boards or [] if b.error]  # fmt: skip


def disturbance_warnings(variants: list[Variant]) -> list[str]:
    """One line per latency measured while other work loaded the machine (see agent.profiling)."""
    return [f"{v.name} on {lat.target} at batch {lat.batch_size}: latency measured while the machine was busy "
            f"({lat.disturbance}); p50 {lat.p50_ms:.4g} ms may be slow, measure again on a quiet machine"
            for v in variants for lat in v.latency if lat.disturbed]  # fmt: skip


def attach(variants: list[Variant], target: TargetSpec, results: TargetResults) -> None:
    for v in variants:
        if v.name in results.accuracy:
            v.accuracy_per_target.append(results.accuracy[v.name])
            v.accuracy = v.accuracy or results.accuracy[v.name]
        v.latency += results.latency.get(v.name, [])
        if v.name in results.errors:
            v.errors.append(f"{target.name}: {results.errors[v.name]}")
