"""One run per output directory, with an OS file lock held for the whole run.

`fcntl.flock` is atomic and the kernel drops it when its process dies, however it dies, so a
killed run's lock is free at once and two runs starting together cannot both take it. The file
stays in place (only its PID text changes): removing it could let a third run lock a new file
while a second still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from compress.errors import LockedError, check_output_folder, writing


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    check_output_folder(folder)
    path = folder / ".lock"
    with writing(path):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (PID {owner})" if owner.isdigit() else ""
        raise LockedError(f"another compress run{who} is writing {folder}",
                          hint="wait for it to finish, or choose another --output") from None  # fmt: skip
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)  # releases the lock
