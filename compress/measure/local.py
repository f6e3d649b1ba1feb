"""Measure a local target in a child process, the measuring program remote devices run.

A runtime's native code can kill its process (SIGSEGV, SIGILL on a CPU without an instruction it
was built for). Run in-process, that would lose the whole report; here it costs one model: the
agent writes progress.json before each step, so when the child dies of a signal the model it was on
gets an error naming the signal, and the job runs again for the remaining models (a crash while
profiling a model costs only its profile: the job runs again without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

from compress.agent.job import PROGRESS
from compress.errors import TargetError
from compress.targets import TargetSpec


def run_job(target: TargetSpec, folder: Path, log) -> dict:
    """Run the job in `folder` in child processes until every model is measured or has crashed;
    returns the result with an error entry for each model a crash took down."""
    job_file = folder / "job.json"
    job = json.loads(job_file.read_text(encoding="utf-8"))
    order, crashed = list(job["models"]), {}
    while True:  # each pass ends the job, takes one model out of it or one model's profiling
        code, tail = run_agent(folder, log)
        marker = read_json(folder / PROGRESS) or {}
        if code == 0 or (marker.get("phase") == "finished" and (folder / "result.json").is_file()):
            if code != 0:  # e.g. a runtime's exit handler crashed: the result was complete
                log(f"warning: {target.name}: the measuring program ended with exit code {code} after its result")
            return with_crashes(read_json(folder / "result.json"), crashed, order)
        name = marker.get("model")
        crash = crash_name(code)
        if crash is None or name not in job["models"]:
            raise TargetError(failure(target, code, crash, marker, tail))
        if marker.get("phase") == "profiling" and job["models"][name].get("profile", True):
            job["models"][name].update(profile=False, parts=None)
            log(f"warning: {target.name}: {target.runtime} crashed ({crash}) while profiling model '{name}'; "
                "measuring again without its profile")  # fmt: skip
            job_file.write_text(json.dumps(job), encoding="utf-8")
            continue
        crashed[name] = f"{target.runtime} crashed ({crash}) while {marker.get('phase')} model '{name}'"
        log(f"warning: {target.name}: {crashed[name]}; measuring the other models again without it")
        del job["models"][name]
        if not job["models"]:
            return with_crashes({"models": {}}, crashed, order)
        job_file.write_text(json.dumps(job), encoding="utf-8")


def run_agent(folder: Path, log) -> tuple[int, deque]:
    """`python -m compress.agent FOLDER` with this process's module path (so plug-in runtimes are
    found), its output streamed to `log`; returns the exit code (negative: the signal) and the
    last lines it wrote."""
    for stale in (folder / "result.json", folder / PROGRESS):
        stale.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    # faulthandler prints the Python stack of a native crash before the process dies of it.
    argv = [sys.executable, "-X", "faulthandler", "-m", "compress.agent", str(folder)]
    tail: deque = deque(maxlen=20)
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                             errors="replace")  # fmt: skip
    try:
        for line in child.stdout:
            tail.append(line.rstrip())
            log(tail[-1])
        return child.wait(), tail
    finally:
        if child.poll() is None:  # interrupted here: do not leave it measuring
            child.kill()
            child.wait()


def crash_name(code: int) -> str | None:
    """The signal that ended the child (POSIX), a Windows exception code, or None when it exited."""
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    if code >= 0xC0000000:  # e.g. 0xC0000005, an access violation
        return f"exception 0x{code:08X}"
    return None


def failure(target: TargetSpec, code: int, crash: str | None, marker: dict, tail: deque) -> str:
    """One line for a child that failed outside any one model."""
    if crash:
        return f"{target.runtime} crashed ({crash}) while {marker.get('phase', 'starting')}, before measuring any model"
    last = next((line for line in reversed(tail) if line.strip()), f"exit code {code}")
    return f"the measuring program failed (exit code {code}): {last}"


def with_crashes(result: dict, crashed: dict[str, str], order: list[str]) -> dict:
    """The result with an error entry for each crashed model, models in the job's order."""
    entries = {**result.get("models", {}), **{n: {"error": e, "latency": []} for n, e in crashed.items()}}
    return {**result, "models": {n: entries[n] for n in order if n in entries}}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
