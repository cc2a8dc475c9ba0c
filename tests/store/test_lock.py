"""One writer per study: the lock refuses a second writer in one line naming the holder, waits with `wait`, and
dies with its holder (flock), so kill -9 never leaves a stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from batchlab.errors import BatchlabError
from batchlab.store.lock import LOCK_NAME, LockWaitStopped, StudyLock

HOLD = textwrap.dedent("""
    import sys, time
    from batchlab.store.lock import StudyLock
    lock = StudyLock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold(directory, seconds: float) -> subprocess.Popen:
    """Another process holding the lock of `directory` for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = hold(tmp_path / "s", 60)
    try:
        with pytest.raises(BatchlabError, match=rf"^out: {tmp_path / 's'} is being written by another batchlab "
                                                rf"process \(pid {holder.pid}: .*, since \d\d:\d\d:\d\d\); allowed: "
                                                r"wait for it to finish \(or pass --wait\)"):
            StudyLock.acquire(tmp_path / "s")
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_dies_with_its_holder_even_by_kill_9(tmp_path):
    holder = hold(tmp_path / "s", 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with StudyLock.acquire(tmp_path / "s") as lock:  # no stale lock
        assert f"pid {os.getpid()}" in (tmp_path / "s" / LOCK_NAME).read_text()
        assert repr(lock).endswith("held=True)")


def test_wait_waits_for_the_holder_and_a_stop_request_ends_the_wait(tmp_path):
    holder = hold(tmp_path / "s", 1.5)
    t0 = time.perf_counter()
    with StudyLock.acquire(tmp_path / "s", wait=True):
        assert holder.poll() is not None  # acquired only once the holder had gone
    assert time.perf_counter() - t0 > 0.5
    holder = hold(tmp_path / "s", 60)
    try:
        with pytest.raises(LockWaitStopped):
            StudyLock.acquire(tmp_path / "s", wait=True, should_stop=lambda: True)
    finally:
        holder.kill()
        holder.wait()


def test_an_unwritable_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BatchlabError, match=r"^out: got '.*file/s'; allowed: a directory path \(.*file is a file\)"):
        StudyLock.acquire(tmp_path / "file" / "s")
    with pytest.raises(BatchlabError, match=r"^out: got '/proc/x/s'; allowed: a directory this user can create"):
        StudyLock.acquire("/proc/x/s")
