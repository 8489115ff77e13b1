"""Routes ``logging`` records to the host's log through ``queue.log``,
and events to the host through ``queue.emit``.

The interpreter, and so the root logger, is shared by every runtime of the
process: one handler on the root logger sends a record to the queue of the
runtime whose thread emitted it, or, for threads a handler started itself,
to the runtime bound most recently.  Installed while a runtime is bound.
A record logged while a call is served (``_call.CURRENT``) goes through
the call's ``task.log``, which attaches the call's metadata to the line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Iterator, List, Optional, Union

from ._call import CURRENT

# nbffi_log_level_t
LOG_ERR, LOG_WARN, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7


def host_level(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return LOG_ERR
    if levelno >= logging.WARNING:
        return LOG_WARN
    if levelno >= logging.INFO:
        return LOG_INFO
    return LOG_DEBUG


class _HostHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.local = threading.local()
        self.bound: List[Any] = []

    def queue(self) -> Optional[Any]:
        queue = getattr(self.local, "queue", None)
        if queue is None and self.bound:
            queue = self.bound[-1]
        return queue

    def emit(self, record: logging.LogRecord) -> None:
        queue = self.queue()
        if queue is None:
            return
        try:
            task = CURRENT.get()
            if task is not None and task.log(host_level(record.levelno),
                                             self.format(record)):
                return
            queue.log(host_level(record.levelno), self.format(record))
        except Exception:
            self.handleError(record)


_handler = _HostHandler()
_lock = threading.Lock()


def bind(queue: Any, level: int) -> None:
    """Sends this thread's records to queue; lowers the root level to level
    if it is above (the most verbose runtime wins)."""
    root = logging.getLogger()
    with _lock:
        if not _handler.bound:
            root.addHandler(_handler)
            root.setLevel(level)
        else:
            root.setLevel(min(root.level, level))
        _handler.bound.append(queue)
    _handler.local.queue = queue


@contextlib.contextmanager
def routed(queue: Any) -> Iterator[None]:
    """Sends this thread's records to queue meanwhile (fini's thread)."""
    _handler.local.queue = queue
    try:
        yield
    finally:
        _handler.local.queue = None


def unbind(queue: Any) -> None:
    _handler.local.queue = None
    with _lock:
        if queue in _handler.bound:
            _handler.bound.remove(queue)
        if not _handler.bound:
            logging.getLogger().removeHandler(_handler)


def emit(name: str, data: Union[bytes, bytearray, memoryview, str] = b"") \
        -> bool:
    """Emits an event to the host (nginx worker) that loaded the runtime:
    Lua handlers registered for ``name`` get ``data``.  Any thread, at any
    time while the runtime runs, with or without a call being served.

    Returns True when queued, False when the host's event queue is full or
    the event is larger than its bound: the event is dropped, and the host
    counts and logs the drop.  Raises ValueError for a bad name (empty,
    over 255 bytes, holding NUL) and RuntimeError outside a runtime.
    """
    queue = _handler.queue()
    if queue is None:
        raise RuntimeError("nbffi.emit(): no runtime is running")
    if isinstance(data, str):
        data = data.encode("utf-8")
    return queue.emit(name, data)
