"""Stopping at an epoch boundary: the first Ctrl-C asks training to stop after the current epoch."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Within the block, the first Ctrl-C asks training to stop after the current epoch (finished epochs are
    kept); a second Ctrl-C interrupts at once."""
    requested = False
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        print("\nStopping after the current epoch (Ctrl-C again to abort now)...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)
