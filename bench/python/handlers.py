"""The handlers of the Python benchmarks, served the same way through nbffi
(in the nginx worker) and through sidecar.py (a separate process)."""


def echo(payload):
    return payload


class Async:
    """The same echo as an async def: the runtime serves it on asyncio."""

    async def echo(self, payload):
        return payload
