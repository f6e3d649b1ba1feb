"""Who used the CPU while a block of calls was timed: the measuring process, the rest of the machine,
the hypervisor; and pinning the timing thread to one core.

Linux reports the machine's CPU time in /proc/stat (ticks per state, all cores summed) and the
process's own in `time.process_time`; elsewhere only the process's own is known. Standard library
only: this module is copied to remote devices as is (Python 3.8 and later).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

try:
    TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # not POSIX
    TICK_S = 0.01


@dataclass
class Block:
    """One timed block: one interleaved round of one variant."""

    start: int  # index of its first sample
    count: int  # samples it timed
    wall_s: float
    cpu_s: float  # CPU time of the measuring process (all its threads, and children it waited for)
    busy_s: float | None  # CPU time of the whole machine (None: unknown on this OS)
    steal_s: float | None  # CPU time the hypervisor gave to other guests
    load_avg: float | None  # 1-minute load average at its end


class Monitor:
    """Records a Block for each timed block of `measure_interleaved`, per candidate.

    `pin`: run the blocks with the timing thread pinned to one core (see `one_core`); `on_block` is
    called with the candidate's name before its warm-up and before each block (a progress marker)."""

    def __init__(self, pin: bool = False, on_block: Callable[[str], None] | None = None) -> None:
        self.pin = pin
        self.on_block = on_block
        self.cores = machine_cores()
        self.blocks: dict[str, list[Block]] = {}

    def starting(self, name: str) -> None:
        if self.on_block is not None:
            self.on_block(name)

    def pinned(self):
        return one_core() if self.pin else contextlib.nullcontext()

    @contextlib.contextmanager
    def block(self, name: str, samples: list):
        """Record the CPU used while the body appends its timings to `samples`."""
        self.starting(name)
        start, machine, cpu, wall = len(samples), machine_times(), own_cpu(), time.perf_counter()
        yield
        wall, cpu, after = time.perf_counter() - wall, own_cpu() - cpu, machine_times()
        busy = steal = None
        if machine and after:
            busy, steal = (after[0] - machine[0]) * TICK_S, (after[1] - machine[1]) * TICK_S
        block = Block(start, len(samples) - start, wall, cpu, busy, steal, load_average())
        self.blocks.setdefault(name, []).append(block)


def own_cpu() -> float:
    """CPU seconds of this process and of the child processes it has waited for (trtexec)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def machine_times() -> tuple[int, int] | None:
    """(busy, steal) ticks of all cores from /proc/stat's first line, or None where there is none.
    Busy is user + nice + system + irq + softirq + steal (guest time is already inside user);
    idle and iowait are not busy."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal, steal


def machine_cores() -> int:
    """Cores /proc/stat counts (its totals are over these), else what the OS reports."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            cores = sum(1 for line in f if line.startswith("cpu") and line[3:4].isdigit())
    except OSError:
        cores = 0
    return cores or os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def one_core():
    """Pin the calling thread to the core it runs on (Linux), so the scheduler does not move it
    between cores mid-measurement (cold caches); its previous cores are restored afterwards. Does
    nothing where the OS does not allow it."""
    before = _pin()
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, before)


def _pin() -> set | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        before = os.sched_getaffinity(0)  # pid 0: the calling thread
        core = _current_core()
        os.sched_setaffinity(0, {core if core in before else max(before)})
        return before
    except OSError:
        return None


def _current_core() -> int | None:
    """The core this thread last ran on: field 39 of /proc/thread-self/stat (after the command name,
    which may hold spaces and ends at the last ')')."""
    try:
        with open("/proc/thread-self/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[36])
    except (OSError, ValueError, IndexError):
        return None
