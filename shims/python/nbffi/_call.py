"""The call being served: its metadata, deadline and cancellation, and
events emitted to the host.

While a handler runs, ``nbffi.current()`` returns its ``Call``: the
context variable is set around a plain handler and a generator's steps,
and in the context of an ``async`` handler's asyncio task, so it follows
the call through awaits (and into tasks the handler creates).  Log records
written meanwhile carry the call's metadata to the host's log.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any, Dict, Optional

# the task being served (a _nbffi.Task or nbffi.testing.Task), or None
CURRENT: "contextvars.ContextVar[Any]" = contextvars.ContextVar(
    "nbffi_call", default=None)


class Call:
    """One call, as its handler sees it."""

    __slots__ = ("_task",)

    def __init__(self, task: Any):
        self._task = task

    @property
    def method(self) -> str:
        return self._task.method

    @property
    def meta(self) -> Dict[str, str]:
        """The call's metadata (request id, traceparent...): a new dict,
        empty when the caller sent none."""
        return dict(self._task.meta)

    @property
    def deadline(self) -> Optional[float]:
        """The caller's deadline on the ``time.monotonic()`` clock, or None
        when it has none."""
        ns = self._task.deadline
        return ns / 1e9 if ns else None

    def remaining(self) -> Optional[float]:
        """Seconds until the deadline (negative once passed), or None."""
        ns = self._task.deadline
        return (ns - time.monotonic_ns()) / 1e9 if ns else None

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up: it timed out, stopped reading a
        stream, or went away.  An ``async`` handler is then cancelled; a
        plain one should check this in long loops and stop."""
        return bool(self._task.cancelled)

    @property
    def streaming(self) -> bool:
        """True when the caller reads the reply as a stream (rt:stream):
        each value a generator handler yields is sent as it comes."""
        return self._task.window > 0

    def __repr__(self) -> str:
        return f"<nbffi.Call {self.method!r} meta={self._task.meta!r}>"


def current() -> Call:
    """The call the calling code serves; raises LookupError outside a
    handler (and in batched handlers, which serve several calls)."""
    task = CURRENT.get()
    if task is None:
        raise LookupError("nbffi.current(): no call is being served here")
    return Call(task)
