"""Measure every target, each device measuring one job at a time, different devices at once.

Timing needs a quiet device, so targets that share one (this machine, or a remote address and
port) take turns, while targets on different devices measure in parallel. A target with `hosts:`
is a fleet of identical boards:
- `spread` deals its variants to whichever board is free, one variant per job. A board that drops
  out (unreachable, its runtime gone) loses only the job it was on, which goes back to the queue
  for the boards that have not tried it; variants no board could measure fail alone.
- `merged` has every board measure every variant in interleaved rounds and pools the boards'
  calls into one distribution per variant, so the p50 interval includes the spread between boards.
- `apart` is one target per board (TARGET.BOARD), each measured like a single remote device.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.agent.profiling import summarize
from compress.data import Splits
from compress.measure.jobs import Deployable, Inputs, TargetResults, attach, measure_target, random_inputs, runs
from compress.report.schema import Board, Latency, TargetInfo, Variant
from compress.runtimes import runtime_class
from compress.targets import TargetSpec


@dataclass
class Work:
    """What every target measures: the models, the inputs for a target, and where results go."""

    models: dict[str, Deployable]
    inputs: Callable[[TargetSpec], Inputs]
    task: object
    log: Callable[[str], None]
    out: Path | None = None

    def names(self, target: TargetSpec) -> list[str]:
        """The variants the target's runtime can run."""
        return [n for n, m in self.models.items() if runs(runtime_class(target.runtime), m)]

    def __call__(self, target: TargetSpec, names: list[str] | None = None, keep_samples: bool = False) -> TargetResults:
        models = self.models if names is None else {n: self.models[n] for n in names}
        return measure_target(target, models, self.inputs(target), self.task, self.log, self.out, keep_samples)


def measure_all(targets: list[TargetSpec], models: dict[str, Deployable], variants: list[Variant],
                splits: Splits | None, task, log, out: Path | None = None, sequence_length: int = 128,
                ) -> list[TargetInfo]:  # fmt: skip
    """Measure every target, attaching results to the variants; a target that fails as a whole (an
    unreachable device) is recorded in its TargetInfo and the others go on. Whole profiles go to
    `out`/profiles/."""

    def inputs(target: TargetSpec) -> Inputs:
        if splits is not None:
            return Inputs.from_splits(splits, task, target.batch_sizes)
        return random_inputs(models, target, sequence_length)

    work = Work(models, inputs, task if splits is not None else None, log, out)
    infos = []
    for target, results, boards in in_parallel(expand(targets), work):
        attach(variants, target, results)
        infos.append(TargetInfo(name=target.name, runtime=target.runtime, device=target.device, threads=target.threads,
                                batch_sizes=target.batch_sizes, protocol=target.protocol.model_dump(),
                                versions=results.versions, host=target.host.label if target.host else None,
                                state=results.state, error=results.error, boards=boards,
                                fleet=target.fleet if boards is not None else None))  # fmt: skip
    return infos


def expand(targets: list[TargetSpec]) -> list[TargetSpec]:
    """Targets as measured: a `fleet: apart` target becomes one remote target per board."""
    out = []
    for t in targets:
        if t.hosts and t.fleet == "apart":
            out += [t.model_copy(update={"name": f"{t.name}.{b.name}", "host": b, "hosts": None}) for b in t.boards()]
        else:
            out.append(t)
    return out


def turns(targets: list[TargetSpec]) -> list[list[TargetSpec]]:
    """The targets in groups that share no device: a group measures its targets in turn (in the
    given order), the groups at once."""
    groups: list[tuple[set[str], list[int]]] = []
    for i, target in enumerate(targets):
        devices = target.devices()
        joined = [g for g in groups if g[0] & devices]
        groups = [g for g in groups if not g[0] & devices]
        groups.append((devices.union(*(g[0] for g in joined)), sorted([i, *(j for g in joined for j in g[1])])))
    return [[targets[i] for i in members] for _, members in sorted(groups, key=lambda g: g[1][0])]


def in_parallel(targets: list[TargetSpec], work: Work) -> list[tuple[TargetSpec, TargetResults, list[Board] | None]]:
    """Each target's results (and a fleet's boards), in the targets' order."""
    groups = turns(targets)
    with ThreadPoolExecutor(max_workers=len(groups) or 1, thread_name_prefix="measure") as pool:
        done = pool.map(lambda group: [(t, *measure_one(t, work)) for t in group], groups)
        by_name = {t.name: (t, results, boards) for group in done for t, results, boards in group}
    return [by_name[t.name] for t in targets]


def measure_one(target: TargetSpec, work: Work) -> tuple[TargetResults, list[Board] | None]:
    if not target.hosts:
        return work(target), None
    boards = [target.model_copy(update={"host": b, "hosts": None}) for b in target.boards()]
    return (spread if target.fleet == "spread" else merged)(target, boards, work)


def board_record(board: TargetSpec) -> Board:
    return Board(name=board.host.name, host=board.host.label)


def note_job(record: Board, results: TargetResults) -> None:
    """A board's versions and state: before its first job, after its last."""
    record.versions = record.versions or results.versions
    record.state = {"state_before": record.state.get("state_before") or results.state.get("state_before"),
                    "state_after": results.state.get("state_after"), "power": results.state.get("power")}  # fmt: skip


def spread(target: TargetSpec, boards: list[TargetSpec], work: Work) -> tuple[TargetResults, list[Board]]:
    """Each variant once, on whichever board is free; a board's failure sends its variant back."""
    queue: deque[str] = deque(work.names(target))
    tried: dict[str, list[str]] = {n: [] for n in queue}
    records = {b.host.name: board_record(b) for b in boards}
    live, busy, results = set(records), [0], TargetResults()
    ready = threading.Condition()

    def take(board: str) -> str | None:
        with ready:
            while board in live:
                name = next((n for n in queue if board not in tried[n]), None)
                if name is not None:
                    queue.remove(name)
                    tried[name].append(board)
                    busy[0] += 1
                    return name
                if busy[0] == 0:  # nothing in flight could come back to the queue
                    break
                ready.wait()
            ready.notify_all()
            return None

    def run(spec: TargetSpec) -> None:
        board = spec.host.name
        while (name := take(board)) is not None:
            measured = work(spec, [name])
            with ready:
                busy[0] -= 1
                if measured.error:
                    records[board].error = measured.error
                    live.discard(board)
                    queue.appendleft(name)
                    work.log(f"warning: {target.name}: board {board} dropped out: {measured.error}; "
                             "the other boards measure its variants")  # fmt: skip
                else:
                    keep(results, measured, board)
                    records[board].variants.append(name)
                    note_job(records[board], measured)
                ready.notify_all()

    with ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="board") as pool:
        list(pool.map(run, boards))
    for name in queue:  # every board that could take it dropped out
        results.errors[name] = "no board could measure it: " + "; ".join(
            f"{b}: {records[b].error}" for b in tried[name]) if tried[name] else "every board had dropped out"  # fmt: skip
    return finish(results, records)


def keep(results: TargetResults, measured: TargetResults, board: str) -> None:
    """One board's job in the target's results, each latency entry marked with its board."""
    results.versions = results.versions or measured.versions
    results.accuracy.update(measured.accuracy)
    results.errors.update(measured.errors)
    for name, entries in measured.latency.items():
        results.latency[name] = [lat.model_copy(update={"boards": {board: lat.p50_ms}}) for lat in entries]


def finish(results: TargetResults, records: dict[str, Board]) -> tuple[TargetResults, list[Board]]:
    """The target fails as a whole only when every board dropped out."""
    if all(r.error for r in records.values()):
        results.error = "every board dropped out: " + "; ".join(f"{r.name}: {r.error}" for r in records.values())
    return results, list(records.values())


def merged(target: TargetSpec, boards: list[TargetSpec], work: Work) -> tuple[TargetResults, list[Board]]:
    """Every variant on every board at once; one distribution per variant and batch size."""
    with ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="board") as pool:
        measured = list(pool.map(lambda spec: work(spec, keep_samples=True), boards))
    records = {b.host.name: board_record(b) for b in boards}
    results = TargetResults()
    for spec, done in zip(boards, measured, strict=True):
        record = records[spec.host.name]
        if done.error:
            record.error = done.error
            work.log(f"warning: {target.name}: board {record.name} dropped out: {done.error}")
            continue
        note_job(record, done)
        record.variants = list(done.latency)
        results.versions = results.versions or done.versions
        for name, accuracy in done.accuracy.items():
            results.accuracy.setdefault(name, accuracy)
            if accuracy.value != results.accuracy[name].value:
                work.log(f"warning: {target.name}: {name} scores {accuracy.value} on board {record.name} but "
                         f"{results.accuracy[name].value} on another; the boards are not identical")  # fmt: skip
        for name, error in done.errors.items():
            results.errors.setdefault(name, f"{record.name}: {error}")
    ok = [(spec.host.name, done) for spec, done in zip(boards, measured, strict=True) if not done.error]
    for name in {n for _, done in ok for n in done.latency}:
        results.latency[name] = pooled_entries(name, ok, target.protocol.ci_target)
        results.errors.pop(name, None)  # measured on some boards: the others' failures are their own
    return finish(results, records)


def pooled_entries(name: str, boards: list[tuple[str, TargetResults]], ci_target: float) -> list[Latency]:
    """One latency entry per batch size for a variant, from the calls of every board that timed it."""
    batches = sorted({lat.batch_size for _, done in boards for lat in done.latency.get(name, [])})
    out = []
    for batch in batches:
        entries = [(board, lat, done.samples[name][batch]) for board, done in boards
                   for lat in done.latency.get(name, []) if lat.batch_size == batch]  # fmt: skip
        out.append(pool(entries, ci_target))
    return out


def pool(entries: list[tuple[str, Latency, tuple[np.ndarray, list[float]]]], ci_target: float) -> Latency:
    """Boards' measurements of one variant at one batch size as one: percentiles of all their calls,
    the p50 interval from all their blocks (so a slower board widens it), the worst disturbance."""
    first = entries[0][1]
    calls = np.concatenate([samples for _, _, (samples, _) in entries])
    medians = [m for _, _, (_, block) in entries for m in block]
    stats = summarize(calls, first.batch_size, any(lat.capped for _, lat, _ in entries), ci_target, medians=medians)
    lats = [lat for _, lat, _ in entries]
    shares = [lat.cpu_share for lat in lats if lat.cpu_share is not None]
    update = {k: v for k, v in stats.to_dict().items() if k in Latency.model_fields}
    update.update(
        boards={board: lat.p50_ms for board, lat, _ in entries},
        disturbed=any(lat.disturbed for lat in lats) if any(lat.disturbed is not None for lat in lats) else None,
        disturbance="; ".join(f"{b}: {lat.disturbance}" for b, lat, _ in entries if lat.disturbance) or None,
        cpu_share=min(shares) if shares else None,
        others_cpu_share=worst(lat.others_cpu_share for lat in lats),
        steal_share=worst(lat.steal_share for lat in lats),
        load_avg=worst(lat.load_avg for lat in lats),
    )
    if first.requests:  # throughput with requests in flight is each board's own figure
        update["throughput"] = float(np.mean([lat.throughput for lat in lats]))
    return first.model_copy(update=update)


def worst(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None
