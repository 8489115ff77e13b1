"""Routes ``logging`` records to the host's log through ``queue.log``.

The interpreter, and so the root logger, is shared by every runtime of the
process: one handler on the root logger sends a record to the queue of the
runtime whose thread emitted it, or, for threads a handler started itself,
to the runtime bound most recently.  Installed while a runtime is bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Iterator, List

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

    def emit(self, record: logging.LogRecord) -> None:
        queue = getattr(self.local, "queue", None)
        if queue is None:
            if not self.bound:
                return
            queue = self.bound[-1]
        try:
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
