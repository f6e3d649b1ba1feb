"""Stage results as tasks: every sweep point's stages become one graph keyed by the stage cache keys,
so points that share a prefix wait on one task, and each task runs in any process from data alone
(its stage's configuration, the cache folders of its inputs and of the data splits). The cache is
where results travel: a worker builds `cache/<stage>-<key>/` exactly as a local run would, and
resume works the same whichever process made a result.

Executors: `local` runs the recipe's loop in this process (compress.pipeline); `processes` a pool
of N local processes (spawned, not forked: torch's threads do not survive a fork); `ray` a Ray
cluster (`ray_address`, or a local one started for the run). Measurement stays in the driver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.errors import writing
from compress.names import file_name


@dataclass(frozen=True)
class StageTask:
    """One stage result to make, as plain data (it crosses process and machine boundaries)."""

    name: str
    key: str
    stage: dict  # the stage's configuration (model_dump by alias), `type` included
    parent: str  # the key of the task (or source) whose result it takes
    refs: dict[str, str]  # artifact name -> key, for the teacher and other references
    point: str  # the sweep point that first asked for it (failures are reported there)
    depends: tuple[str, ...] = ()  # keys of tasks that must finish first
    resources: dict = field(default_factory=dict)  # {"cpus": n, "gpus": n} for a cluster scheduler


@dataclass(frozen=True)
class Setting:
    """What every task of one run shares."""

    cache: str
    splits: str  # the cache folder of the data splits
    task: str
    text: bool
    seed: int
    augment: dict | None
    logs: str
    workers: int = 0  # data.workers


@dataclass
class Outcome:
    key: str
    folder: str | None = None  # the result's cache folder
    reused: bool = False
    failure: Any = None  # a report.schema.StageFailure
    lines: list[str] = field(default_factory=list)


def result_folder(cache: Path, name: str, key: str) -> Path:
    return cache / f"{file_name(name)}-{key}"


def resume_name(name: str, key: str) -> str:
    """The folder beside a stage's result where its training keeps an epoch checkpoint while it
    runs. Unlike the half-made stage folder (a dot name, removed after a kill) it survives a kill, and
    its key ties it to one configuration and input (compress.stages.checkpoint)."""
    return f"{file_name(name)}-{key}.resume"


def make_cached(cache: Path, name: str, key: str, make: Callable[[Path], Artifact], log) -> tuple[Artifact, bool]:
    """Reuse `cache/<name>-<key>` if complete, else build it aside and rename it into place;
    returns (artifact, reused?)."""
    final = result_folder(cache, name, key)
    resume = cache / resume_name(name, key)  # a training stage's epoch checkpoint
    if Artifact.exists(final):
        log(f"{name}: reusing cached result {final.name}")
        shutil.rmtree(resume, ignore_errors=True)
        return Artifact.load(final), True
    with writing(cache):
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{file_name(name)}-", dir=cache))
    try:
        artifact = make(work)
        artifact.key, artifact.folder = key, work
        with writing(final):
            artifact.save()
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        shutil.rmtree(resume, ignore_errors=True)  # the result is in place: no more resuming
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    artifact.folder = final
    return artifact, False


def run_task(task: StageTask, setting: Setting, folders: dict[str, str]) -> Outcome:
    """Make one stage result in this process, from its inputs' cache folders (`folders`: key ->
    folder). Errors come back as a failure record, never as an exception across processes."""
    from compress import registry
    from compress.data import Splits
    from compress.failures import stage_failure
    from compress.stages import StageContext
    from compress.tasks import get_task

    outcome = Outcome(task.key)
    log = outcome.lines.append
    try:
        stage = registry.resolve("stages", task.stage["type"]).model_validate(task.stage)
        cache = Path(setting.cache)
        parent = Artifact.load(Path(folders[task.parent]))
        refs = {name: Artifact.load(Path(folders[key])) for name, key in task.refs.items()}
        ctx = dict(splits=Splits.load(Path(setting.splits)), task=get_task(setting.task, text=setting.text),
                   seed=setting.seed, log=log, show_progress=False, shared_cache=cache, augment=setting.augment,
                   workers=setting.workers, refs=refs, checkpoints=cache / resume_name(task.name, task.key))  # fmt: skip
        artifact, outcome.reused = make_cached(cache, task.name, task.key,
                                               lambda d: stage.run(parent, StageContext(workdir=d, **ctx)), log)  # fmt: skip
        outcome.folder = str(artifact.folder)
    except Exception as exc:  # noqa: BLE001 - reported per stage; the other branches go on
        outcome.failure = stage_failure(exc, task.name, task.point, Path(setting.logs))
    return outcome


def run_graph(tasks: dict[str, StageTask], setting: Setting, folders: dict[str, str], executor: str, jobs: int,
              log, address: str | None = None) -> dict[str, Outcome]:  # fmt: skip
    """Run every task once its dependencies are made, `jobs` at a time; a task whose dependency
    failed is not run (and has no outcome). `folders` starts with the sources' folders."""
    submit, wait, close = _pool(executor, jobs, address)
    folders, outcomes, running = dict(folders), {}, {}
    blocked: set[str] = set()
    try:
        while True:
            for key, task in tasks.items():
                if key in outcomes or key in running or key in blocked:
                    continue
                if any(d in blocked for d in task.depends):
                    blocked.add(key)
                elif all(d in outcomes for d in task.depends):
                    log(f"{task.name}: started ({task.point or 'recipe'})")
                    running[key] = submit(task, setting, {k: folders[k] for k in (task.parent, *task.refs.values())})
            if not running:
                return outcomes
            for key, outcome in wait(running):
                del running[key]
                outcomes[key] = outcome
                for line in outcome.lines:
                    log(line)
                if outcome.failure is not None:
                    blocked.add(key)
                else:
                    folders[key] = outcome.folder
    finally:
        close()


def _pool(executor: str, jobs: int, address: str | None):
    """(submit, wait for at least one, close) for a process pool or a Ray cluster."""
    if executor == "ray":
        from compress.ray_executor import ray_pool

        return ray_pool(jobs, address)
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
    from concurrent.futures import wait as wait_futures

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def wait(running: dict):
        done, _ = wait_futures(list(running.values()), return_when=FIRST_COMPLETED)
        return [(key, future.result()) for key, future in running.items() if future in done]

    return (lambda *args: pool.submit(run_task, *args)), wait, lambda: pool.shutdown(cancel_futures=True)
