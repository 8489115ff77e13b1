"""Run a handler in-process, the way the loader runs it, for unit tests.

    from nbffi.testing import Runtime

    with Runtime({"handler": "mymod:Model"}) as rt:
        assert rt.call("predict", b"...") == b"..."
        with rt.stream("tokens", b"...", window=4) as s:
            chunks = list(s)            # CallError if it fails
        assert rt.events.get(timeout=5) == ("reloaded", b"v2")

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
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

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
    __slots__ = ("method", "payload", "meta", "deadline", "window",
                 "_queue", "_reply", "_answered", "_chunks", "_cond",
                 "_full")

    def __init__(self, method: str, payload: bytes,
                 meta: Optional[Dict[str, str]] = None, deadline: int = 0,
                 window: int = 0, queue: Optional["Queue"] = None):
        self.method = method
        self.payload = payload
        self.meta = dict(meta or {})
        self.deadline = deadline        # time.monotonic_ns clock, 0: none
        self.window = window            # 0: a plain call
        self._queue = queue
        self._reply: "Future[Tuple[int, bytes]]" = Future()
        self._answered = False
        self._chunks: Deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._full = False              # a send got "full"

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
        with self._cond:
            self._cond.notify_all()

    def send(self, data: Any, timeout: float) -> Optional[str]:
        """As nbffi_task_send: None (sent), "full", "cancelled", "timeout"
        or "closed"; timeout in seconds, -1: until the deadline."""
        if self._answered:
            raise RuntimeError("send: task already answered")
        if self.window == 0:
            raise RuntimeError("send: the call is not a stream")
        data = bytes(data)
        until = None if timeout < 0 else time.monotonic() + timeout
        if self.deadline:
            end = self.deadline / 1e9
            until = end if until is None else min(until, end)
        with self._cond:
            while len(self._chunks) >= self.window and not self.cancelled:
                if self._queue is not None and self._queue.closed:
                    return "closed"
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    if timeout == 0 or self.deadline == 0 or \
                            time.monotonic_ns() < self.deadline:
                        self._full = True
                        return "full"
                    return "timeout"
                self._cond.wait(left)
            if self.cancelled:
                return "cancelled"
            self._chunks.append(data)
            self._cond.notify_all()
        return None

    def log(self, level: int, text: str) -> bool:
        if self._answered or self._queue is None:
            return False
        self._queue.logs.append((level, text))
        self._queue.call_logs.append((level, text, dict(self.meta)))
        return True

    # the caller's side of a stream

    def _next_chunk(self, timeout: Optional[float]) -> Optional[bytes]:
        """The next chunk, or None once answered and all read."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self._chunks or self._reply.done(), timeout):
                raise TimeoutError("no chunk within the timeout")
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._cond.notify_all()
            wake, self._full = self._full, False
        if wake and self._queue is not None:
            self._queue.wake()
        return chunk

    def _cancel(self) -> None:
        self._reply.cancel()
        with self._cond:
            self._cond.notify_all()
        if self._queue is not None:
            self._queue.wake()


class Stream:
    """The caller's side of a streamed call: iterate for the chunks; a
    CallError ends the iteration when the final status is not 0; close()
    (or leaving the with block early) gives up, as a Lua caller that stops
    reading does."""

    def __init__(self, task: Task, timeout: Optional[float]):
        self._task = task
        self._timeout = timeout
        self.reply: Optional[bytes] = None     # the final reply, once read

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> bytes:
        chunk = self._task._next_chunk(self._timeout)
        if chunk is not None:
            return chunk
        status, data = self._task._reply.result(0)
        if status != 0:
            raise CallError(status, data.decode("utf-8", "replace"))
        self.reply = data
        raise StopIteration

    def read(self) -> Optional[bytes]:
        """One chunk, None at the end (see __next__)."""
        try:
            return next(self)
        except StopIteration:
            return None

    @property
    def buffered(self) -> int:
        """Chunks sent and not yet read."""
        return len(self._task._chunks)

    def close(self) -> None:
        if not self._task._reply.done():
            self._task._cancel()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Queue:
    """An in-memory request queue with the interface of ``_nbffi.Queue``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tasks: Deque[Task] = collections.deque()
        self._closed = False
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.logs: List[Tuple[int, str]] = []
        # (level, text, metadata) of the lines logged for a call
        self.call_logs: List[Tuple[int, str, Dict[str, str]]] = []
        self.events: "queue.Queue[Tuple[str, bytes]]" = queue.Queue()
        self.max_events = 65536
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

    def wake(self) -> None:
        """Makes the eventfd readable: a window opened, a call cancelled."""
        os.eventfd_write(self._efd, 1)

    def emit(self, name: str, data: Any) -> bool:
        raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
        if not 0 < len(raw) <= 255 or b"\0" in raw:
            raise ValueError(f"emit: bad event name {name!r}")
        if self.events.qsize() >= self.max_events:
            return False
        self.events.put((raw.decode("utf-8", "surrogateescape"),
                         bytes(data)))
        return True

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

    @property
    def events(self) -> "queue.Queue[Tuple[str, bytes]]":
        """(name, data) of the events emitted, in order."""
        return self.queue.events

    @property
    def call_logs(self) -> List[Tuple[int, str, Dict[str, str]]]:
        """(level, text, metadata) of the records logged for a call."""
        return list(self.queue.call_logs)

    def _post(self, method: str, payload: bytes,
              meta: Optional[Dict[str, str]], timeout: Optional[float],
              window: int) -> Task:
        deadline = 0 if timeout is None else \
            time.monotonic_ns() + int(timeout * 1e9)
        task = Task(method, payload, meta, deadline, window, self.queue)
        self.queue.put(task)
        return task

    def submit(self, method: str, payload: bytes,
               meta: Optional[Dict[str, str]] = None,
               deadline: Optional[float] = None) -> \
            "Future[Tuple[int, bytes]]":
        """Posts a call; the future's result is (status, reply bytes).
        deadline: seconds the handler sees as its deadline (None: none);
        cancel the future to give up."""
        return self._post(method, payload, meta, deadline, 0)._reply

    def stream(self, method: str, payload: bytes, window: int = 16,
               meta: Optional[Dict[str, str]] = None,
               deadline: Optional[float] = None,
               timeout: Optional[float] = 30) -> Stream:
        """Posts a streamed call; timeout bounds the wait for each chunk."""
        if window < 1:
            raise ValueError("stream: window must be >= 1")
        return Stream(self._post(method, payload, meta, deadline, window),
                      timeout)

    def call(self, method: str, payload: bytes,
             timeout: Optional[float] = 30,
             meta: Optional[Dict[str, str]] = None) -> bytes:
        status, data = self.submit(method, payload, meta).result(timeout)
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
