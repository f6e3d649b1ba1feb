"""The measuring program: runs a job folder's models on one target and writes result.json.

A job folder holds job.json (the target and the models), eval/ (the evaluation inputs, one .npy file
per model input, read a batch at a time) and one batch<N>.npz per batch size. For each model this program runs the evaluation inputs through the
target's runtime (outputs saved for scoring), times it with the latency protocol (variants in
interleaved rounds) and records the device's state before and after. Each model is then profiled at
the smallest batch size it was timed at, and that latency entry gets its time per op type, its
slowest layers and, for a model whose entry carries "parts" rules, its time per part (see
compress.agent.parts).

The same program measures local targets (in a child process, see compress.measure.local) and
remote devices, where it runs as `python -m compress.agent JOB_FOLDER` from a copy of the few modules
it imports (`shipped_files()`), with only numpy and the runtime installed there (Python 3.8 and later).

Before each step that runs a runtime's native code it writes progress.json (the phase and the model),
so when a runtime crashes the process (SIGSEGV, SIGILL) whoever started it knows which model did it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from compress import registry
from compress.agent import parts as model_parts
from compress.agent import state as device_state
from compress.agent import store
from compress.agent.profiling import Monitor, block_medians, judge, measure_interleaved, summarize
from compress.data.rows import RowFile
from compress.errors import first_line
from compress.runtimes.base import COMPUTED, Session

PACKAGE = Path(__file__).resolve().parent.parent
CORE = (
    "__init__.py",
    "errors.py",
    "registry.py",
    "runtimes/__init__.py",
    "runtimes/base.py",
    "runtimes/trtexec.py",
    "data/__init__.py",
    "data/rows.py",
)
PROGRESS = "progress.json"


def shipped_files() -> list[str]:
    """What a device needs to run this program, relative to the compress package: the agent, the
    registry and every built-in runtime's module. A plug-in runtime must be installed on the device."""
    agent = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "agent").glob("*.py"))
    modules = [v.partition(":")[0] for v in registry.BUILTIN["runtimes"].values()]
    return [*CORE, *agent, *(m.replace("compress.", "", 1).replace(".", "/") + ".py" for m in modules)]


def namespace(value):
    """JSON objects as attribute access: a runtime reads this as it reads a TargetSpec (both are
    runtimes.base.TargetSettings)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: namespace(v) for k, v in value.items()})
    return value


def load_feeds(path: Path) -> dict[str, np.ndarray]:
    """A batch's named inputs (.npz), or a folder of evaluation inputs whose rows are read as used."""
    if path.is_dir():
        return {file.stem: RowFile(file) for file in sorted(path.glob("*.npy"))}
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def run_job(folder: Path, log=print) -> dict:
    """Measure every model of the job in `folder`; returns (and writes) the result."""
    folder = Path(folder)
    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    target = namespace(job["target"])
    mark(folder, "starting")
    result = {"state_before": device_state.capture(target.device), "models": {}}
    eval_feeds = load_feeds(folder / job["eval"]) if job.get("eval") else None
    batches = {int(b): load_feeds(folder / name) for b, name in job["batches"].items()}
    some_feeds = eval_feeds or next(iter(batches.values()))
    shapes = {name: tuple(a.shape[1:]) for name, a in some_feeds.items()}
    runtime = registry.resolve("runtimes", target.runtime)(target, shapes)
    if not runtime.available():
        result["error"] = (f"runtime {target.runtime} is not installed on {result['state_before']['hostname']} "
                           f"for {sys.executable}; install it there or point host.python at a Python that has it")  # fmt: skip
        return _write(folder, result)
    try:
        result["versions"] = runtime.versions()
    except Exception as exc:  # noqa: BLE001 - e.g. TensorRT asked for trtexec and the device has none
        result["error"] = f"{target.runtime} cannot run on {result['state_before']['hostname']}: {first_line(exc)}"
        return _write(folder, result)
    sessions = {}
    for name, spec in job["models"].items():
        result["models"][name], session = _load_and_evaluate(runtime, folder, name, spec, eval_feeds, target)
        if session is not None:
            sessions[name] = session
    with device_state.PowerSampler() if getattr(target, "power", False) else contextlib.nullcontext() as power:
        for batch, feeds in batches.items():
            _time_batch(sessions, feeds, batch, target, result["models"], log, folder, job.get("samples", False))
    result["power"] = power.summary() if power else None
    result["state_after"] = device_state.changing(target.device)
    for name, session in sessions.items():
        if job["models"][name].get("profile", True):
            _profile(name, session, job["models"][name].get("parts"), batches, result["models"][name], target,
                     log, folder)  # fmt: skip
    _write(folder, result)
    mark(folder, "finished")  # a crash after this (a runtime's exit handler) loses nothing
    return result


def _write(folder: Path, result: dict, name: str = "result.json") -> dict:
    tmp = folder / f"{name}.tmp"
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, folder / name)
    return result


def mark(folder: Path, phase: str, model: str | None = None, batch: int | None = None) -> None:
    """Record what is about to run (progress.json), read back when the process dies of a signal."""
    _write(folder, {"phase": phase, "model": model, "batch": batch}, PROGRESS)


def runtime_for(runtime, spec: dict, target):
    """The runtime that loads a model: a variant whose precision the runtime computes in (bf16,
    runtimes.base.COMPUTED) gets one set to that precision."""
    wanted = spec.get("precision")
    if wanted in COMPUTED and wanted != target.precision:
        return type(runtime)(SimpleNamespace(**{**vars(target), "precision": wanted}), runtime.example_shapes)
    return runtime


def _load_and_evaluate(runtime, folder: Path, name: str, spec: dict, eval_feeds, target):
    """(result entry, timing session or None); a runtime refusing one model must not lose the others."""
    path = folder / spec["file"]
    try:
        runtime = runtime_for(runtime, spec, target)
        if spec.get("sha256"):
            store.verify(path, spec["sha256"])
        entry = {"latency": []}
        if eval_feeds is not None:
            mark(folder, "loading", name)
            evaluation = runtime.load(path, os.cpu_count() or 1)
            mark(folder, "evaluating", name)
            outputs = predict(evaluation, eval_feeds, target.eval_batch_size)
            (folder / "outputs").mkdir(exist_ok=True)
            np.save(folder / "outputs" / f"{name}.npy", outputs)
            entry["outputs"] = f"outputs/{name}.npy"
        mark(folder, "loading", name)
        session = runtime.load(path, target.threads)
        entry["precision"], entry["provider"] = session.precision, session.provider
        return entry, session
    except Exception as exc:  # noqa: BLE001 - reported per model, the job goes on
        return {"error": f"{target.runtime} could not run this model: {first_line(exc)}", "latency": []}, None


def predict(session, feeds: dict[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
    """The first output for all inputs, run in batches (one at a time for fixed-batch models)."""
    step = session.fixed_batch or batch_size
    total = len(next(iter(feeds.values())))
    parts = [session.run({k: np.ascontiguousarray(v[i : i + step]) for k, v in feeds.items()})[0]
             for i in range(0, total, step)]  # fmt: skip
    return np.concatenate(parts)


def _time_batch(sessions: dict, feeds: dict, batch: int, target, entries: dict, log, folder: Path,
                keep_samples: bool = False) -> None:  # fmt: skip
    """Latency at one batch size: runtimes that time themselves (trtexec) one by one, the others in
    interleaved rounds under the shared protocol; each with the CPU record of its blocks. With
    `keep_samples`, every call's time and each block's median come back too (a fleet pools them)."""
    runnable = {n: s for n, s in sessions.items() if s.fixed_batch in (None, batch)}
    if not runnable:
        return
    p = target.protocol
    log(f"{target.name}: timing {len(runnable)} variant(s) at batch {batch} with {target.threads} thread(s)")
    # Pinning one thread is safe; a pool's threads started during timing would inherit the one core.
    monitor = Monitor(pin=target.threads == 1, on_block=lambda name: mark(folder, "timing", name, batch))
    raw = _self_timed(runnable, feeds, p, monitor)
    calls = {n: (lambda s=s: s.run(feeds)) for n, s in runnable.items() if n not in raw}
    if calls:
        timed = measure_interleaved(calls, p.warmup, p.min_iterations, p.min_seconds, p.max_seconds, p.rounds,
                                    p.ci_target, monitor=monitor)  # fmt: skip
        raw.update({n: (samples, capped, None) for n, (samples, capped) in timed.items()})
    for name, (samples, capped, summary) in raw.items():
        blocks = monitor.blocks.get(name, [])
        load = judge(blocks, monitor.cores, target.threads, cpu_bound=target.device == "cpu")
        stats = summarize(samples, batch, capped, p.ci_target, blocks, load).to_dict()
        timed = {"batch_size": batch, "stats": stats, "runtime_summary": summary, "shapes": runnable[name].shapes}
        if keep_samples:
            (folder / "outputs").mkdir(exist_ok=True)
            np.save(folder / "outputs" / f"{name}.b{batch}.latency.npy", np.asarray(samples, dtype=np.float64))
            timed.update(
                samples=f"outputs/{name}.b{batch}.latency.npy", block_medians_ms=block_medians(samples, blocks)
            )
        mark(folder, "timing", name, batch)
        parallel = runnable[name].throughput(feeds, max(p.min_seconds, 0.5))
        if parallel is not None:  # the target asks for throughput: requests in parallel, not 1 / latency
            stats["throughput"], timed["requests"] = round(parallel[0], 4), parallel[1]
        entries[name]["latency"].append(timed)


def _profile(name: str, session: Session, rules: list | None, batches: dict, entry: dict, target, log,
             folder: Path) -> None:  # fmt: skip
    """Where the model's time goes at the smallest batch it was timed at, from the runtime's own
    profiler: time per op type and the slowest layers (and per part, given `rules`; see agent.parts),
    scaled to that batch's p50 and recorded in that latency entry; the whole profile goes into
    entry["profile"]. A runtime without a profiler records none, and a profiler that fails costs
    only the breakdown (noted in the entry), never the latency."""
    if not entry["latency"]:
        return
    timed = min(entry["latency"], key=lambda t: t["batch_size"])
    batch, p50 = timed["batch_size"], timed["stats"]["p50_ms"]
    runs = model_parts.runs_for(p50, target.protocol.min_seconds)
    mark(folder, "profiling", name, batch)
    try:
        profile = session.profile(batches[batch], runs)
    except Exception as exc:  # noqa: BLE001 - the latency stands without its breakdown
        timed["profile_error"] = f"{target.runtime} could not profile this model: {first_line(exc)}"
        log(f"warning: {target.name}: {name}: {timed['profile_error']}")
        return
    if not profile:
        return
    timed.update(model_parts.layer_summary(profile, p50) or {})
    timed.update((model_parts.breakdown(profile, rules, p50) or {}) if rules else {})
    entry["profile"] = {"batch_size": batch, "runs": runs, "nodes": profile}


def _self_timed(sessions: dict, feeds: dict, protocol, monitor: Monitor) -> dict:
    """{name: (samples, capped, summary)} of the sessions that time themselves, each as one block."""
    raw = {}
    for name, session in sessions.items():
        if type(session).benchmark is Session.benchmark:
            continue
        with monitor.block(name, []):
            timed = session.benchmark(feeds, protocol)
        if timed is None:  # it declined after all: the shared protocol times it, with blocks of its own
            monitor.blocks.pop(name, None)
        else:
            raw[name] = timed
    return raw


def main(argv: list[str] | None = None) -> int:
    """Entry point on a device: `python -m compress.agent JOB_FOLDER`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m compress.agent JOB_FOLDER", file=sys.stderr)
        return 2
    run_job(Path(args[0]), log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
