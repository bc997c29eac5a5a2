"""One aglora process per output directory: an exclusive lock file that names its holder.

`lock_dir(DIR)` takes `DIR/.aglora.lock` (an OS file lock through the `filelock` package, so a
crashed process never leaves a stale lock) and writes the holder's PID into it; a second process
asking for the same directory is refused at once with that PID. A process keeps the locks it took
until `release_all()` (the CLI calls it when a command ends) or its exit; asking again for a
directory it already holds is a no-op, so one command may open the same run more than once.
`holding(DIR)` takes the lock for a block and gives it back after, unless it was held before (a
library call such as `run_bench` leaves no lock behind).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aglora.errors import AgloraError

LOCK_NAME = ".aglora.lock"
_HELD: dict[str, object] = {}  # resolved directory -> the FileLock this process holds


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def holder_pid(directory: Path) -> str:
    """The PID written in `directory`'s lock file ('unknown' when it cannot be read)."""
    try:
        text = (Path(directory) / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def lock_dir(directory: Path) -> None:
    """Hold `directory`'s lock for the rest of this command; another holder is an AgloraError."""
    from filelock import FileLock, Timeout

    directory = Path(directory)
    key = str(directory.resolve())
    if key in _HELD:
        return
    lock = FileLock(str(directory / LOCK_NAME), on_acquired=_write_pid)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise AgloraError(f"{directory} is in use by another aglora process (PID "
                          f"{holder_pid(directory)}); wait for it to finish, or choose another "
                          "--out") from None
    except OSError as exc:
        raise AgloraError(f"{directory}: cannot write the lock file {LOCK_NAME} "
                          f"({exc.strerror}); choose a writable --out") from None
    _HELD[key] = lock


@contextmanager
def holding(directory: Path) -> Iterator[None]:
    """`lock_dir(directory)` for the block; released after it unless this process held it
    before the block began."""
    held_before = str(Path(directory).resolve()) in _HELD
    lock_dir(directory)
    try:
        yield
    finally:
        if not held_before:
            release(directory)


def release(directory: Path) -> None:
    lock = _HELD.pop(str(Path(directory).resolve()), None)
    if lock is not None:
        lock.release()


def release_all() -> None:
    """Release every directory lock this process holds."""
    for key in list(_HELD):
        _HELD.pop(key).release()
