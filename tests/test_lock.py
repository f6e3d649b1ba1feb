"""One run per output folder, even when several start at the same moment or one was killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from compress.errors import LockedError
from compress.lock import run_lock


def _take(folder: str, log: str, start: float) -> None:
    while time.time() < start:  # release every taker at once
        pass
    try:
        with run_lock(Path(folder)):
            with open(log, "a") as f:
                f.write(f"in {os.getpid()}\n")
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(f"out {os.getpid()}\n")
    except LockedError:
        pass


def test_concurrent_takers_never_hold_the_lock_together(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for trial in range(25):
        folder, log = tmp_path / f"t{trial}", tmp_path / f"t{trial}.log"
        start = time.time() + 0.2
        procs = [ctx.Process(target=_take, args=(str(folder), str(log), start)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(10)
        lines = log.read_text().split() if log.exists() else []
        inside = 0
        for word in lines[::2]:
            inside += 1 if word == "in" else -1
            assert inside <= 1, f"trial {trial}: two runs held the lock together: {lines}"
        assert lines, f"trial {trial}: nobody took the lock"


def _hold_forever(folder: str) -> None:
    with run_lock(Path(folder)):
        time.sleep(60)


def test_a_killed_runs_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=_hold_forever, args=(str(tmp_path),))
    holder.start()
    deadline = time.time() + 10
    while not (tmp_path / ".lock").exists() or not (tmp_path / ".lock").read_text():
        assert time.time() < deadline
        time.sleep(0.01)
    with pytest.raises(LockedError, match=f"PID {holder.pid}"), run_lock(tmp_path):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    with run_lock(tmp_path):  # the dead run's lock is stale: taken over
        pass


def test_leaving_the_lock_never_removes_another_runs_lock(tmp_path):
    with run_lock(tmp_path):
        pass
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=_hold_forever, args=(str(tmp_path),))
    holder.start()
    time.sleep(0.5)
    with pytest.raises(LockedError), run_lock(tmp_path):
        pass
    # The refused attempt above did not break the holder's lock.
    with pytest.raises(LockedError), run_lock(tmp_path):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
