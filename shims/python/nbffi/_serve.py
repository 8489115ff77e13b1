"""Serves one runtime's queue on the calling thread until it is closed.

The queue is the loader's ``_nbffi.Queue`` (or ``nbffi.testing``'s):
``pop(max, timeout)`` returns a list of tasks, ``[]`` on timeout and
``None`` once the queue is closed and empty; ``fd()`` and ``drain()``
give an eventfd for event loops; ``log(level, text)``.  A task has
``method`` (str), ``payload`` (bytes) and ``respond(data, status=0)``,
which must be called exactly once.

Two modes.  Handlers that are all plain functions are served by a loop
that blocks in ``pop`` with the GIL released (the core spins briefly before
sleeping, so back-to-back calls skip the thread wake-up).  A handler with
an ``async def`` method or a batched method is served by an asyncio loop
that watches the queue's eventfd, so awaits overlap and batches fill while
other work runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Set

from ._config import Config
from ._errors import STATUS_ERROR, STATUS_NO_METHOD, describe
from ._handler import BatchMethod, Entry, close_hook

POP_MAX = 256

log = logging.getLogger("nbffi")


def reply_bytes(result: Any) -> Any:
    """The reply for a handler's return value (bytes-like objects pass)."""
    if result is None:
        return b""
    if isinstance(result, str):
        return result.encode("utf-8")
    if isinstance(result, (bytes, bytearray, memoryview)):
        return result
    if asyncio.iscoroutine(result):
        result.close()
        raise TypeError("handler returned a coroutine: declare it async def "
                        "so that the runtime awaits it")
    raise TypeError(f"handler returned {type(result).__name__}, "
                    f"expected bytes, str or None")


def answer(task: Any, result: Any) -> None:
    try:
        data = reply_bytes(result)
    except TypeError as exc:
        task.respond(*_error(exc))
        return
    task.respond(data)


def fail(task: Any, exc: BaseException) -> None:
    task.respond(*_error(exc))


def _error(exc: BaseException) -> tuple:
    status, text = describe(exc)
    return text.encode("utf-8", "backslashreplace"), status


def _no_method(task: Any, names: List[str]) -> None:
    text = f"no method {task.method!r}; methods: {', '.join(names)}"
    task.respond(text.encode("utf-8", "backslashreplace"), STATUS_NO_METHOD)


class Server:
    def __init__(self, queue: Any, config: Config, target: Any,
                 table: Dict[str, Entry]):
        self.queue = queue
        self.config = config
        self.target = target
        self.table = table
        self.names = sorted(table)
        self.asynchronous = any(isinstance(e, BatchMethod) or e.is_async
                                for e in table.values())

    def serve(self) -> None:
        mode = "asyncio" if self.asynchronous else "blocking"
        log.info("serving %s (%s): %s", self.config.handler, mode,
                 ", ".join(self.names))
        try:
            if self.asynchronous:
                _AsyncLoop(self).run()
            else:
                self._serve_blocking()
        finally:
            hook = close_hook(self.target)
            if hook is not None:
                try:
                    hook()
                except Exception:
                    log.exception("%s: close() raised", self.config.handler)

    def _serve_blocking(self) -> None:
        pop, table = self.queue.pop, self.table
        while True:
            tasks = pop(POP_MAX, -1.0)
            if tasks is None:
                return
            for task in tasks:
                entry = table.get(task.method)
                if entry is None:
                    _no_method(task, self.names)
                    continue
                try:
                    result = entry.fn(task.payload)
                except BaseException as exc:
                    fail(task, exc)
                    continue
                answer(task, result)


class _AsyncLoop:
    """The asyncio mode: one event loop, owned by the runtime thread."""

    def __init__(self, server: Server):
        self.server = server
        self.queue = server.queue
        self.loop = asyncio.new_event_loop()
        self.pending: Set[asyncio.Task] = set()
        self.batchers = {name: _Batcher(self, e)
                         for name, e in server.table.items()
                         if isinstance(e, BatchMethod)}
        self.closing = False
        self.cancelled = (f"python: the runtime was closed and the handler "
                          f"still ran {server.config.close_timeout:g}s "
                          f"later (close_timeout): cancelled").encode()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.add_reader(self.queue.fd(), self.on_ready)
            self.loop.call_soon(self.on_ready)
            self.loop.run_forever()
        finally:
            asyncio.set_event_loop(None)
            self.loop.close()

    def on_ready(self) -> None:
        self.queue.drain()
        while not self.closing:
            tasks = self.queue.pop(POP_MAX, 0)
            if tasks is None:
                self.begin_close()
                break
            if not tasks:
                break
            for task in tasks:
                try:
                    self.dispatch(task)
                except Exception as exc:
                    # The shim's own failure, e.g. a handler that answered
                    # its task itself: the rest of the batch still runs.
                    log.exception("%s: serving %r failed", self.server.config
                                  .handler, task.method)
                    try:
                        fail(task, exc)
                    except RuntimeError:
                        pass            # it was answered already
        for batcher in self.batchers.values():
            batcher.queue_drained()

    def dispatch(self, task: Any) -> None:
        entry = self.server.table.get(task.method)
        if entry is None:
            _no_method(task, self.server.names)
        elif isinstance(entry, BatchMethod):
            self.batchers[task.method].add(task)
        elif entry.is_async:
            try:
                coro = entry.fn(task.payload)
            except BaseException as exc:
                fail(task, exc)
                return
            self.spawn(self.finish(task, coro))
        else:
            try:
                result = entry.fn(task.payload)
            except BaseException as exc:
                fail(task, exc)
                return
            answer(task, result)

    def spawn(self, coro: Any) -> None:
        atask = self.loop.create_task(coro)
        self.pending.add(atask)
        atask.add_done_callback(self.done)

    async def finish(self, task: Any, coro: Any) -> None:
        try:
            result = await coro
        except BaseException as exc:
            self.fail([task], exc)
            return
        answer(task, result)

    def fail(self, tasks: List[Any], exc: BaseException) -> None:
        for task in tasks:
            # only cancel() cancels handlers
            if isinstance(exc, asyncio.CancelledError):
                task.respond(self.cancelled, STATUS_ERROR)
            else:
                fail(task, exc)

    def done(self, atask: asyncio.Task) -> None:
        self.pending.discard(atask)
        if self.closing:
            self.maybe_stop()

    def begin_close(self) -> None:
        """The queue is closed and empty: finish what is pending, then stop.
        Handlers still running after close_timeout are cancelled."""
        self.closing = True
        self.loop.remove_reader(self.queue.fd())
        for batcher in self.batchers.values():
            batcher.flush()
        self.loop.call_later(self.server.config.close_timeout, self.cancel)
        self.maybe_stop()

    def cancel(self) -> None:
        if self.pending:
            log.warning("%s: cancelling %d handler(s) still running %gs "
                        "after close", self.server.config.handler,
                        len(self.pending), self.server.config.close_timeout)
        for atask in list(self.pending):
            atask.cancel()

    def maybe_stop(self) -> None:
        if not self.pending:
            self.loop.stop()


class _Batcher:
    """Collects the calls of one batched method; runs X_batch on them."""

    def __init__(self, owner: _AsyncLoop, entry: BatchMethod):
        self.owner = owner
        self.fn: Callable[[list], Any] = entry.fn
        self.is_async = entry.is_async
        self.max_size = entry.opts.max_size
        self.max_wait = entry.opts.max_wait
        self.tasks: List[Any] = []
        self.timer: Optional[asyncio.TimerHandle] = None

    def add(self, task: Any) -> None:
        self.tasks.append(task)
        if len(self.tasks) >= self.max_size:
            self.flush()
        elif self.max_wait > 0 and self.timer is None:
            self.timer = self.owner.loop.call_later(self.max_wait,
                                                    self.flush)

    def queue_drained(self) -> None:
        # without a wait, a batch is what was queued: run it now
        if self.max_wait == 0 and self.tasks:
            self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.tasks:
            batch = self.tasks[:self.max_size]
            del self.tasks[:self.max_size]
            self.run(batch)

    def run(self, batch: List[Any]) -> None:
        try:
            results = self.fn([t.payload for t in batch])
        except BaseException as exc:
            for task in batch:
                fail(task, exc)
            return
        if self.is_async:
            self.owner.spawn(self.finish(batch, results))
        else:
            self.answer(batch, results)

    async def finish(self, batch: List[Any], coro: Any) -> None:
        try:
            results = await coro
        except BaseException as exc:
            self.owner.fail(batch, exc)
            return
        self.answer(batch, results)

    def answer(self, batch: List[Any], results: Any) -> None:
        try:
            results = list(results)
            if len(results) != len(batch):
                raise ValueError(f"{self.fn.__name__} returned "
                                 f"{len(results)} results for "
                                 f"{len(batch)} payloads")
        except BaseException as exc:
            for task in batch:
                fail(task, exc)
            return
        for task, result in zip(batch, results):
            if isinstance(result, BaseException):
                fail(task, result)
            else:
                answer(task, result)
