"""Streams, events and metadata for tests/nginx/test_python_stream.py:
generators (plain and async), a counter of the generators closed, events
emitted from calls and from a thread, and log lines written during calls.
"""

import asyncio
import json
import logging
import threading

import nbffi

log = logging.getLogger("t_stream")


class Streams:
    def __init__(self):
        self.sent = {}              # method -> chunks sent by the last call
        self.closed = 0             # generators closed before their end
        self.changed = None         # asyncio.Event, made on the loop

    def _closed(self, name):
        self.closed += 1
        try:
            rid = nbffi.current().meta.get("request_id", "-")
        except LookupError:
            rid = "(no call)"
        log.info("%s closed, request %s", name, rid)
        if self.changed is not None:
            self.changed.set()

    # "N SIZE": N chunks of SIZE bytes, each starting with its number
    def count(self, p):
        n, size = map(int, p.split())
        for i in range(n):
            self.sent["count"] = i + 1
            yield (b"%d:" % i).ljust(size, b".")
        return b"end"

    async def acount(self, p):
        n, size = map(int, p.split())
        for i in range(n):
            await asyncio.sleep(0)
            self.sent["acount"] = i + 1
            yield (b"%d:" % i).ljust(size, b".")

    def endless(self, p):
        self.sent["endless"] = 0
        try:
            while True:
                yield b"e" * int(p or b"1024")
                self.sent["endless"] += 1
        finally:
            self._closed("endless")

    async def aendless(self, p):
        self.sent["aendless"] = 0
        try:
            while True:
                await asyncio.sleep(0)
                yield b"a" * int(p or b"1024")
                self.sent["aendless"] += 1
        finally:
            self._closed("aendless")

    def fails(self, p):
        yield b"first"
        raise ValueError("second: " + p.decode())

    def sent_by(self, p):
        return str(self.sent.get(p.decode(), 0))

    async def wait_closed(self, p):
        """Waits until at least int(p) generators were closed early, at
        most 20 s (then the count falls short: the test fails, the worker
        still exits at once)."""
        if self.changed is None:
            self.changed = asyncio.Event()
        try:
            async with asyncio.timeout(20):
                while self.closed < int(p):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pass
        return str(self.closed)

    # metadata, deadline, log lines

    def meta(self, p):
        call = nbffi.current()
        log.info("meta call %s", p.decode())
        return json.dumps({"meta": call.meta, "method": call.method,
                           "deadline_left": call.remaining(),
                           "cancelled": call.cancelled,
                           "streaming": call.streaming})

    async def ameta(self, p):
        await asyncio.sleep(0)
        log.warning("async meta call %s", p.decode())
        return json.dumps(nbffi.current().meta)

    async def hold(self, p):
        """Awaits forever; logs its cancel (the caller gave up)."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._closed("hold")
            raise

    # events

    def emit(self, p):
        """"NAME N SIZE": N events NAME with SIZE-byte data "i:...";
        returns how many were queued."""
        name, n, size = p.decode().split()
        queued = 0
        for i in range(int(n)):
            queued += nbffi.emit(name, (b"%d:" % i).ljust(int(size), b"."))
        return str(queued)

    def emit_later(self, p):
        """Emits p's event from a thread of its own, after the call."""
        name, _, data = p.partition(b" ")

        def later():
            nbffi.emit(name.decode(), data)
        threading.Thread(target=later).start()
        return b"started"
