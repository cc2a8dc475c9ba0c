"""A minimal headless-Chromium driver over the DevTools protocol, with no Python dependency beyond the stdlib.

Chromium started with `--remote-debugging-pipe` reads protocol commands on file descriptor 3 and writes replies
and events on descriptor 4, each message JSON terminated by a NUL byte. That is all a test needs to load a page,
collect console errors, uncaught exceptions, network requests and dialogs, run JavaScript, click at a point and
take a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One browser with one page. Use as a context manager; events seen so far are in `events`."""

    def __init__(self, executable: str, *, width: int = 1400, height: int = 1000, timeout: float = 60):
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="batchlab-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # The browser's ends must become its fds 3 and 4. A preexec_fn could dup2 them, but it forces a plain
        # fork, which JAX (threaded, loaded in the test process) warns about; a tiny Python exec wrapper does it.
        # Its source fds are first moved to >= 10 so that the dup2s cannot overwrite one another.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, replies_write)]
        for fd in (commands_read, replies_write):
            os.close(fd)
        wrapper = (f"import os, sys; os.dup2({high[0]}, 3); os.dup2({high[1]}, 4); os.close({high[0]}); "
                   f"os.close({high[1]}); os.execv(sys.argv[1], sys.argv[1:])")
        self._proc = subprocess.Popen([sys.executable, "-c", wrapper, executable, *FLAGS,
                                       f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
                                       "about:blank"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      pass_fds=high)
        for fd in high:
            os.close(fd)
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._threads = [threading.Thread(target=self._read_messages, daemon=True),
                         threading.Thread(target=lambda: self._stderr.extend(self._proc.stderr), daemon=True)]
        for t in self._threads:
            t.start()
        self._next_id = 0
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def _read_messages(self) -> None:
        buffer = b""
        while chunk := os.read(self._replies, 1 << 20):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for m in messages:
                self._inbox.put(json.loads(m))
        self._inbox.put(None)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its reply; events arriving meanwhile go to `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError(f"chromium exited: {b''.join(self._stderr).decode(errors='replace')[-2000:]}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page."""
        return self.send(method, self.session, **params)

    def wait_for_event(self, method: str, *, after: int = 0) -> dict[str, Any]:
        """The first event `method` among events[after:], waiting for it if it has not come yet."""
        deadline = time.monotonic() + self.timeout
        while True:
            for e in self.events[after:]:
                if e.get("method") == method:
                    return e
            message = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            if message is None:
                raise RuntimeError("chromium exited")
            self.events.append(message)

    def open(self, path: Path) -> float:
        """Navigate to a local file and wait for its load event; returns the seconds that took."""
        t0 = time.perf_counter()
        seen = len(self.events)
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for_event("Page.loadEventFired", after=seen)
        return time.perf_counter() - t0

    def wait_until(self, expression: str, *, timeout: float = 10) -> None:
        """Poll a JavaScript condition until it holds."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at viewport coordinates, as a user's mouse would make it."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        """The whole page (beyond the viewport) as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        """URLs of every network request the page made."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def dialogs(self) -> list[str]:
        """Messages of alert/confirm/prompt dialogs the page opened."""
        return [e["params"]["message"] for e in self.events if e.get("method") == "Page.javascriptDialogOpening"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass  # already gone: the kill below is then a no-op
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for t in self._threads:
            t.join(timeout=10)
        os.close(self._commands)
        os.close(self._replies)
        self._proc.stderr.close()
        self._profile.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
