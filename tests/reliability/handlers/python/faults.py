"""The Python fault handler of the reliability tests (see ../README.md).

``faults:Faults`` serves the fault methods; it has ``async`` methods, so
the shim runs it on asyncio and its plain methods inline on the loop (a
slow one stalls the runtime, which is what fills the queue).
``faults:Echo`` is plain, served by the blocking loop: the soak's path.

Options (the cfg's "options"): {"fail_init": MSG} raises in __init__,
{"hang_init": true} never returns from it.
"""

import asyncio
import ctypes
import logging
import sys
import threading
import time

# The task a "never" call was stashed with: answered by the shim at close;
# "late" tries to answer it again afterwards.
_stashed = []


class Echo:
    def echo(self, payload):
        return payload


class Faults:
    def __init__(self, options=None):
        options = options or {}
        if "fail_init" in options:
            raise RuntimeError(options["fail_init"])
        if options.get("hang_init"):
            threading.Event().wait()
        self.flaky_calls = 0
        self.release_event = asyncio.Event()

    def echo(self, payload):
        return payload

    def flaky(self, payload):
        self.flaky_calls += 1
        if self.flaky_calls % int(payload) == 0:
            raise ValueError(f"flaky: call {self.flaky_calls} failed")
        return b"ok"

    async def never(self, payload):
        # the shim's coroutine that awaits this one holds the calls
        _stashed[:] = sys._getframe(1).f_locals["tasks"]
        release = self.release_event
        while True:
            try:
                await release.wait()
                return b"late"
            except asyncio.CancelledError:
                # deaf to its caller giving up (the shim cancels it), as a
                # handler may be: only release, or the close, ends it
                pass

    def release(self, payload):
        self.release_event.set()
        self.release_event = asyncio.Event()
        return b"released"

    def sleep(self, payload):
        time.sleep(int(payload) / 1000)
        return b"slept"

    def crash(self, payload):
        ctypes.memmove(int(payload or b"0"), b"x", 1)

    def log(self, payload):
        logging.getLogger("faults").warning("%s", payload.decode())
        return b"logged"

    def twice(self, payload):
        """Answers its own task, then returns: the shim answers again."""
        sys._getframe(1).f_locals["task"].respond(b"first")
        return b"second"

    def late(self, payload):
        """Answers the task of a "never" call of an earlier runtime, which
        the shim answered when that runtime closed."""
        try:
            _stashed[0].respond(b"late")
        except (RuntimeError, IndexError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return b"answered again"
