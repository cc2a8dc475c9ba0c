"""Stopping at an epoch boundary: the first Ctrl-C, SIGTERM or SIGHUP asks training to stop after the current
epoch (finished epochs are kept, runs are marked interrupted, and the command exits 128 + the signal number
after saving: 130, 143, 129); a second one aborts at once."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a study gracefully: Ctrl-C, `kill` (and schedulers' preemption), a closed terminal."""


class Aborted(KeyboardInterrupt):
    """A second stop signal: abort now (runs in flight are marked interrupted on the way out)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Callable: whether a stop was requested; `signum` is the first stop signal received (None: none)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal (0 when none came)."""
        return 0 if self.signum is None else 128 + self.signum


@contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """Within the block, the first stop signal (`STOP_SIGNALS`) asks training to stop after the current epoch;
    a second one raises :class:`Aborted` (a KeyboardInterrupt) at once. Off the main thread (where Python cannot
    install handlers) the request never turns true."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:
            raise Aborted(signum)
        request.signum = signum
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        try:
            print(f"\nStopping after the current epoch ({what}; again to abort now)...", file=sys.stderr)
        except OSError:  # SIGHUP: the terminal may be gone
            pass

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
