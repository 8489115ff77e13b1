"""Async handler class for the loader tests."""

import asyncio
import logging

log = logging.getLogger("t_async")


class Gate:
    def __init__(self):
        self.opened = asyncio.Event()
        self.waiting = 0
        self.cancellations = []
        self.cancelled = asyncio.Event()

    async def wait(self, payload):
        self.waiting += 1
        await self.opened.wait()
        return payload

    async def waiting_count(self, payload):
        return str(self.waiting)

    def open(self, payload):
        self.opened.set()
        return b"opened"

    async def sleep(self, payload):
        await asyncio.sleep(float(payload))
        return b"slept " + payload

    async def boom(self, payload):
        await asyncio.sleep(0)
        raise KeyError(payload.decode())

    async def forever(self, payload):
        log.info("forever: started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            self.cancellations.append(exc.args[0] if exc.args else "")
            self.cancelled.set()
            raise

    async def wait_cancelled(self, payload):
        """Returns the reasons of the cancellations of forever, once there
        is one."""
        await self.cancelled.wait()
        return "; ".join(self.cancellations)
