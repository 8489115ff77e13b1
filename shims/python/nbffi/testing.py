"""Run a handler in-process, the way the loader runs it, for unit tests.

    from nbffi.testing import Runtime

    with Runtime({"handler": "mymod:Model"}) as rt:
        assert rt.call("predict", b"...") == b"..."

The handler is started on its own thread by the same code the embedded
loader runs (cfg parsing, sys.path, import, both serving modes, batching,
error replies, logging); only the request queue is this module's in-memory
stand-in for nbffi's.  Needs Linux (os.eventfd).
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Deque, List, Optional, Tuple, Union

from . import _embed


class LoadError(Exception):
    """The runtime did not start; the message is what nbffi.load returns."""


class CallError(Exception):
    """A call was answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"status {status}: {message}")
        self.status = status
        self.message = message


class Task:
    __slots__ = ("method", "payload", "_reply", "_answered")

    def __init__(self, method: str, payload: bytes):
        self.method = method
        self.payload = payload
        self._reply: "Future[Tuple[int, bytes]]" = Future()
        self._answered = False

    @property
    def cancelled(self) -> bool:
        """The caller gave up: its future was cancelled."""
        return self._reply.cancelled()

    def respond(self, data: Any, status: int = 0) -> None:
        if self._answered:
            raise RuntimeError(f"task {self.method!r} answered twice")
        self._answered = True
        try:
            self._reply.set_result((status, bytes(data)))
        except InvalidStateError:
            pass                        # cancelled: no one reads it


class Queue:
    """An in-memory request queue with the interface of ``_nbffi.Queue``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tasks: Deque[Task] = collections.deque()
        self._closed = False
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.logs: List[Tuple[int, str]] = []
        # the thread serving the queue, set while it does
        self.serving: Optional[threading.Thread] = None

    def put(self, task: Task) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("runtime closed")
            self._tasks.append(task)
            self._cond.notify()
        os.eventfd_write(self._efd, 1)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        os.eventfd_write(self._efd, 1)

    def pop(self, max: int, timeout: float) -> Optional[List[Task]]:
        with self._cond:
            if timeout != 0:
                self._cond.wait_for(lambda: self._tasks or self._closed,
                                    None if timeout < 0 else timeout)
            if not self._tasks:
                return None if self._closed else []
            n = min(max, len(self._tasks))
            return [self._tasks.popleft() for _ in range(n)]

    def fd(self) -> int:
        return self._efd

    def drain(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass

    def log(self, level: int, text: str) -> None:
        self.logs.append((level, text))

    def interrupt(self, exc: type) -> bool:
        thread = self.serving
        if thread is None:
            return False
        # alive while serving is set, so its id names no other thread
        return ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc)) == 1

    def free(self) -> None:
        os.close(self._efd)


class Runtime:
    """A handler served on its own thread; cfg as for nbffi.load (a dict
    is sent as JSON)."""

    def __init__(self, cfg: Union[str, bytes, dict]):
        if isinstance(cfg, dict):
            cfg = json.dumps(cfg)
        if isinstance(cfg, str):
            cfg = cfg.encode("utf-8")
        self.queue = Queue()
        self._started = threading.Event()
        self._error = ""
        self._server: Optional[_embed.Server] = None
        self._thread = threading.Thread(target=self._run, args=(cfg,),
                                        name="nbffi-testing", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error:
            self._thread.join()
            self.queue.free()
            raise LoadError(self._error)

    def _run(self, cfg: bytes) -> None:
        self._server, self._error = _embed.start(self.queue, cfg)
        self._started.set()
        if self._server is not None:
            self.queue.serving = threading.current_thread()
            try:
                _embed.serve(self._server)
            finally:
                self.queue.serving = None

    @property
    def logs(self) -> List[Tuple[int, str]]:
        """(nbffi log level, text) of every record logged so far."""
        return list(self.queue.logs)

    def submit(self, method: str, payload: bytes) -> \
            "Future[Tuple[int, bytes]]":
        """Posts a call; the future's result is (status, reply bytes)."""
        task = Task(method, payload)
        self.queue.put(task)
        return task._reply

    def call(self, method: str, payload: bytes,
             timeout: Optional[float] = 30) -> bytes:
        status, data = self.submit(method, payload).result(timeout)
        if status != 0:
            raise CallError(status, data.decode("utf-8", "replace"))
        return data

    def close(self, timeout: Optional[float] = None) -> int:
        """Closes the queue and stops the runtime as the loader's fini
        does: queued calls are still served; async handlers still running
        after close_timeout (or shortly before timeout, in seconds) are
        cancelled, then the thread is interrupted.  Waits for the thread
        until timeout (None: no limit) and returns the number of threads
        that stayed (1: left running, a daemon).  Idempotent."""
        if self.queue.closed:
            return int(self._thread.is_alive())
        self.queue.close()
        deadline = 0 if timeout is None else \
            time.monotonic_ns() + int(timeout * 1e9)
        _embed.stop(self._server, deadline)
        self._thread.join(None if timeout is None else
                          max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        if self._thread.is_alive():
            return 1
        self.queue.free()
        return 0

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
