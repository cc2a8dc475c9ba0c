"""One writer per study: an exclusive lock on a file in the study directory, held for the writer's whole life.

`batchlab run`, `sweep` and `resume` take it before they look at the directory and keep it until they exit,
so creating a study, registering its runs and training them happen under it; readers (`show`, `report`,
`export`) never take it. The lock is `fcntl.flock` on `.study.lock`: the kernel releases it when its holder
dies, even by kill -9, so a crashed writer never leaves a stale lock. The holder writes its pid and command into
the file, and a second writer is refused with one line naming them (or waits, with `wait=True`).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from batchlab.errors import BatchlabError, invalid

LOCK_NAME = ".study.lock"
POLL_S = 0.2
"""How often a waiting writer tries the lock again."""


class LockWaitStopped(Exception):
    """A stop request (Ctrl-C, SIGTERM) arrived while waiting for the lock: nothing was done."""


class StudyLock:
    """The exclusive write lock of one study directory (see the module docstring). Use as a context manager."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self._fd = directory, fd

    def __repr__(self) -> str:
        return f"StudyLock({str(self.directory)!r}, held={self._fd >= 0})"

    @classmethod
    def acquire(cls, directory: str | Path, *, wait: bool = False,
                should_stop: Callable[[], bool] = lambda: False) -> StudyLock:
        """Create `directory` if needed and lock it. Raises BatchlabError if another process holds the lock and
        `wait` is False (naming its pid and command), or if the directory cannot be created; with `wait`, polls
        until the holder exits (LockWaitStopped if `should_stop()` turns true meanwhile)."""
        d = Path(directory)
        make_directory("out", d)
        path = d / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise invalid("out", str(d), f"a directory this user can write ({e.strerror} creating {path})") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not wait:
                    raise _refusal(d) from None
                if should_stop():
                    raise LockWaitStopped from None
                time.sleep(POLL_S)
                continue
            if _same_file(fd, path):  # not a lock file that its holder removed while we waited
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(_command())}, since {time.strftime('%H:%M:%S')}\n".encode())
        return cls(d, fd)

    @staticmethod
    def check_free(directory: str | Path) -> None:
        """Raise the refusal of :meth:`acquire` now if another process holds the lock, without creating anything
        (a quick answer before a command loads its data; the lock itself is taken later, by acquire)."""
        d = Path(directory)
        try:
            fd = os.open(d / LOCK_NAME, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(d) from None
        finally:
            os.close(fd)

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up; `remove` also deletes the lock file (when the directory itself is being removed)."""
        if self._fd < 0:
            return
        if remove:
            (self.directory / LOCK_NAME).unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(d: Path) -> BatchlabError:
    return BatchlabError(f"out: {d} is being written by another batchlab process ({holder(d)}); allowed: wait for "
                         "it to finish (or pass --wait), or another --out directory")


def holder(directory: str | Path) -> str:
    """What the lock file says about its holder ("pid N: command, since HH:MM:SS"), or a placeholder."""
    try:
        text = (Path(directory) / LOCK_NAME).read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "its pid is not written yet"


def make_directory(field: str, directory: Path) -> None:
    """mkdir -p, with one line naming the path and the reason when it fails (unwritable, a file in the way)."""
    blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise invalid(field, str(directory), f"a directory path ({blocker} is a file)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise invalid(field, str(directory), f"a directory this user can create ({e.strerror})") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _command() -> list[str]:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv and argv[0] in ("cli.py", "__main__.py", "-m", "-c"):
        argv[0] = "batchlab"
    return argv
