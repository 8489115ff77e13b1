"""Async handler class for the loader tests."""

import asyncio


class Gate:
    def __init__(self):
        self.opened = asyncio.Event()
        self.waiting = 0

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
