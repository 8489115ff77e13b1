"""The handlers of the Python benchmarks, served the same way through nbffi
(in the nginx worker) and through sidecar.py (a separate process).  md5 is
the hashing job of bench/run, which it also gives ngx.run_worker_thread."""

import hashlib


def echo(payload):
    return payload


def md5(payload):
    return hashlib.md5(payload).hexdigest()


class Async:
    """The same echo as an async def: the runtime serves it on asyncio."""

    async def echo(self, payload):
        return payload
