"""Data-parallel training: a recipe run as several processes ("ranks") under torchrun
(https://pytorch.org/docs/stable/elastic/run.html), started by `compress run --nproc N` or by
`torchrun ... -m compress run`.

Every rank walks the recipe's stages in the same order over the same cache, but only rank 0 writes:
it holds the output folder's lock for the whole run, makes every stage result, and alone measures
and reports. The other ranks never open the lock file (rank 0 holds it, so they could only fail
on it) and never write into the output folder. For each stage, rank 0 tells them whether the
result is cached (`agree`). When it is not and the stage trains, every rank trains its share under
DistributedDataParallel (compress.stages.parallel) while rank 0 also evaluates, checkpoints and
saves; for any other stage they wait. Either way they then read rank 0's result from the cache, so
the next stage starts from the same artifact on every rank. After the last stage they exit, and
rank 0 measures alone. Nothing here enters a cache key: the result is the same model whatever the
process count.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from compress.errors import CompressError, ExitCode, StageError, UsageError

EXIT_FILE = "COMPRESS_EXIT_CODE_FILE"  # where rank 0 leaves its exit code for `--nproc`
# The other ranks wait on rank 0's untrained stages (data, pruning, export, calibration) here.
WAIT = timedelta(hours=24)

_control: Any = None  # the gloo group that carries rank 0's word, whatever trains on NCCL


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def size() -> int:
    """How many processes the run has (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_size() -> int:
    """How many of the run's processes are on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


THREADS = "COMPRESS_THREADS"  # set in each worker process of a task executor: its share of the cores


def leader() -> bool:
    """Whether this process writes: always, except on ranks other than 0 of a data-parallel run."""
    return rank() == 0


def threads() -> int:
    """CPU threads for one rank's training: this machine's cores shared among its ranks."""
    set_for_worker = int(os.environ.get(THREADS, "0"))  # a process of the processes executor
    return set_for_worker or max(1, (os.cpu_count() or 1) // local_size())


class TrainingAborted(CompressError):
    """A rank failed in the middle of data-parallel training: the others are waiting in a collective
    that will never complete, so the run ends (torchrun stops the remaining ranks)."""

    exit_code = ExitCode.STAGE_FAILED


class ShareDone(Exception):  # noqa: N818 - not an error: the normal end of a stage on ranks other than 0
    """Ends a stage on a rank other than 0 once its share of the training is done; evaluating,
    saving and exporting the result are rank 0's."""


@contextlib.contextmanager
def joined() -> Iterator[None]:
    """The process group for the duration of the stages: gloo on the CPU, NCCL for CUDA tensors
    (each rank on cuda:LOCAL_RANK), plus a gloo group for rank 0's word."""
    global _control
    if size() == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    if local_rank() < (torch.cuda.device_count() if torch.cuda.is_available() else 0):
        torch.cuda.set_device(local_rank())
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    _control = dist.new_group(backend="gloo", timeout=WAIT)
    try:
        yield
    finally:
        _control = None
        dist.destroy_process_group()


def agree(value: Any = None) -> Any:
    """Rank 0's `value`, on every rank (each rank must call this at the same point)."""
    if size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


@contextlib.contextmanager
def telling() -> Iterator[None]:
    """On rank 0, around making a stage's result: tell the other ranks whether it was made (see
    `follow`). An aborted training has no one left to tell."""
    try:
        yield
    except TrainingAborted:
        raise
    except Exception:
        agree(False)
        raise
    agree(True)


def follow(final: Path, make: Callable[[Path], Any] | None) -> None:
    """On a rank other than 0, for the stage result `final`: when rank 0 is making it, take part
    (`make` is given for training stages), then wait until rank 0 says whether it is in place."""
    if agree():  # cached: nothing to make
        return
    if make is not None:
        with tempfile.TemporaryDirectory(prefix="compress-rank-") as workdir:
            try:
                make(Path(workdir))
            except ShareDone:
                pass
            except TrainingAborted:
                raise
            except Exception:  # noqa: BLE001 - rank 0 meets the same error and records it
                pass
    if not agree():
        raise StageError("rank 0 could not make this stage's result", hint="rank 0's report says why")


def launch(nproc: int, args: list[str]) -> int:
    """Run `compress ARGS` as `nproc` processes under torchrun on this machine, and return rank 0's
    exit code (torchrun's own says only whether every rank exited 0)."""
    import subprocess
    import sys

    if size() > 1:
        raise UsageError("--nproc starts torchrun itself", hint="under torchrun, leave --nproc out")
    with tempfile.TemporaryDirectory(prefix="compress-launch-") as folder:
        exit_file = Path(folder) / "exit-code"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "compress", *args]  # fmt: skip
        process = subprocess.Popen(command, env={**os.environ, EXIT_FILE: str(exit_file)})
        try:
            code = process.wait()
        except KeyboardInterrupt:
            stop(process)
            raise
        text = exit_file.read_text().strip() if exit_file.is_file() else ""
        return int(text) if text.isdigit() else code


def stop(process) -> None:
    """Let torchrun stop its ranks: from a terminal it got the interrupt too; otherwise tell it."""
    import subprocess

    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()  # torchrun passes it on to every rank
        process.wait()


def record_exit(code: int | str | None) -> None:
    """Leave rank 0's exit code where `launch` reads it."""
    path = os.environ.get(EXIT_FILE)
    if path and leader():
        Path(path).write_text(str(code if isinstance(code, int) else 0 if code is None else 1))
