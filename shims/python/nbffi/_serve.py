"""Serves one runtime's queue on the calling thread until it is closed.

The queue is the loader's ``_nbffi.Queue`` (or ``nbffi.testing``'s):
``pop(max, timeout)`` returns a list of tasks, ``[]`` on timeout and
``None`` once the queue is closed and empty; ``fd()`` and ``drain()``
give an eventfd for event loops; ``log(level, text)``; ``interrupt(exc)``
raises exc in the thread serving the queue, while it does;
``emit(name, data)`` sends an event.  A task has ``method`` (str),
``payload`` (bytes), ``cancelled`` (the caller gave up), ``meta`` (a dict),
``deadline`` (time.monotonic_ns clock, 0: none), ``window`` (chunks in
flight, 0 for a plain call), ``send(data, timeout)`` (a chunk: None when
sent, else "full", "cancelled", "timeout" or "closed"), ``log(level,
text)`` (False once answered) and ``respond(data, status=0)``, which must
be called exactly once.

Streams.  A generator handler (plain or async) yields chunks: to a caller
that streams (``window`` > 0) each is sent as it comes, and a send waits
while the window is full (in the asyncio mode, the loop serves other calls
meanwhile: a send that finds the window full awaits the queue's eventfd,
which the core makes readable when the window opens or the call is
cancelled); to a plain call they are joined into one reply.  A caller that
stops reading closes the generator.

Two modes.  Handlers that are all plain functions are served by a loop
that blocks in ``pop`` with the GIL released (the core spins briefly before
sleeping, so back-to-back calls skip the thread wake-up).  A handler with
an ``async def`` method or a batched method is served by an asyncio loop
that watches the queue's eventfd, so awaits overlap and batches fill while
other work runs; an async call whose caller gave up is cancelled.

Stopping.  Once the host closed the queue, the calls queued are still
served.  ``Server.stop`` (the loader's fini, on another thread) waits for
serving to end and makes it hurry as the host's deadline nears: see
``stop_times``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ._config import Config
from ._call import CURRENT
from ._errors import STATUS_ERROR, STATUS_NO_METHOD, Interrupted, describe
from ._handler import BatchMethod, Entry, close_hook

POP_MAX = 256

GAVE_UP_POLL = 0.05
"""Seconds between two looks for async calls whose caller gave up: the
core marks such a task cancelled but tells no one."""

STOP_MARGIN_NS = 1_000_000_000
"""The most time before the host's close deadline that stop() keeps for
cancelling and interrupting."""

GAVE_UP = "cancelled: the caller gave up"
STREAM_ENDED = {
    "cancelled": GAVE_UP,
    "timeout": "stream: the deadline passed while the window was full",
    "closed": "stream: the runtime was closed while the window was full",
}
_ANSWERED = object()        # a stream answered already (its caller left)
CLOSED = "cancelled: the runtime was closed and the handler still ran"
REFUSED = b"python: the runtime was closed before this call started"

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


def stop_times(now_ns: int, deadline_ns: int, close_timeout: float) \
        -> Tuple[int, int]:
    """When stop() cancels and when it interrupts (time.monotonic_ns).

    At the cancel time, async handlers still running are cancelled and
    calls not yet started are refused; at the interrupt time, a runtime
    thread still running Python code gets ``Interrupted`` raised in it.
    Handlers get close_timeout after the close, but the cancel comes at
    the latest a margin before the host's deadline (half the time left, at
    most STOP_MARGIN_NS), and the interrupt half-way from the cancel to
    the deadline.  Without a deadline (0), the interrupt comes half the
    margin after the cancel.
    """
    cancel = now_ns + int(close_timeout * 1e9)
    if deadline_ns == 0:
        return cancel, cancel + STOP_MARGIN_NS // 2
    margin = min(STOP_MARGIN_NS, max(0, deadline_ns - now_ns) // 2)
    cancel = min(cancel, deadline_ns - margin)
    return cancel, cancel + (deadline_ns - cancel) // 2


def _ended(task: Any, why: str) -> None:
    text = STREAM_ENDED.get(why, f"stream: {why}")
    task.respond(f"python: {text}".encode(), STATUS_ERROR)


def _close(gen: Any) -> None:
    try:
        gen.close()
    except Exception:
        log.exception("closing the generator of a stream failed")


def serve_plain(task: Any, entry: Entry) -> None:
    """Runs a plain (not async) handler for task and answers it; the
    caller has set CURRENT."""
    try:
        result = entry.fn(task.payload)
    except BaseException as exc:
        fail(task, exc)
        return
    if entry.stream:
        stream_blocking(task, result)
    else:
        answer(task, result)


def stream_blocking(task: Any, gen: Any) -> None:
    """Sends what a plain generator yields, waiting (GIL released) while
    the window is full; joins it into one reply for a plain call."""
    streaming = task.window > 0
    parts: List[bytes] = []
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                final = stop.value
                break
            data = reply_bytes(item)
            if not streaming:
                parts.append(bytes(data))
                continue
            why = task.send(data, -1.0)
            if why:
                _close(gen)
                _ended(task, why)
                return
    except BaseException as exc:
        _close(gen)
        fail(task, exc)
        return
    if streaming:
        answer(task, final)
    else:
        try:
            parts.append(bytes(reply_bytes(final)))
        except TypeError as exc:
            fail(task, exc)
            return
        task.respond(b"".join(parts))


def _refuse(task: Any) -> None:
    task.respond(REFUSED, STATUS_ERROR)


def _cancelled_text(exc: BaseException) -> bytes:
    reason = exc.args[0] if exc.args else "cancelled"
    return f"python: {reason}".encode()


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
        asynchronous = any(isinstance(e, BatchMethod) or e.is_async
                           for e in table.values())
        # made here, on the thread that serves: stop() may come any time
        self.loop = _AsyncLoop(self) if asynchronous else None
        self.stopping = False           # calls not yet started are refused
        self.finished = threading.Event()

    def serve(self) -> None:
        mode = "asyncio" if self.loop is not None else "blocking"
        log.info("serving %s (%s): %s", self.config.handler, mode,
                 ", ".join(self.names))
        try:
            try:
                if self.loop is not None:
                    self.loop.run()
                else:
                    self._serve_blocking()
            finally:
                self._close_hook()
        except Interrupted:
            log.warning("%s: interrupted while stopping", self.config.handler)
        finally:
            self.finished.set()

    def stop(self, deadline_ns: int) -> None:
        """Called on another thread once the queue is closed; returns when
        serving has ended or the interrupt is sent (see stop_times)."""
        cancel_at, interrupt_at = stop_times(time.monotonic_ns(),
                                             deadline_ns,
                                             self.config.close_timeout)
        if self._wait(cancel_at):
            return
        self.stopping = True
        if self.loop is not None:
            self.loop.threadsafe(self.loop.cancel_all)
        if self._wait(interrupt_at):
            return
        if self.queue.interrupt(Interrupted):
            log.warning("%s: interrupting the runtime thread, still busy "
                        "after the cancel", self.config.handler)
            if self.loop is not None:
                # an idle loop must wake up to raise it
                self.loop.threadsafe(lambda: None)

    def _wait(self, until_ns: int) -> bool:
        """Waits for serving to end until until_ns; whether it did."""
        return self.finished.wait(
            max(0, until_ns - time.monotonic_ns()) / 1e9)

    def _close_hook(self) -> None:
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
                if self.stopping:
                    _refuse(task)
                    continue
                entry = table.get(task.method)
                if entry is None:
                    _no_method(task, self.names)
                    continue
                token = CURRENT.set(task)
                try:
                    serve_plain(task, entry)
                finally:
                    CURRENT.reset(token)


class _AsyncLoop:
    """The asyncio mode: one event loop, owned by the runtime thread."""

    def __init__(self, server: Server):
        self.server = server
        self.queue = server.queue
        self.loop = asyncio.new_event_loop()
        # each handler's asyncio task -> (the calls it answers, the
        # handler's coroutine)
        self.pending: Dict[asyncio.Task, Tuple[List[Any], Any]] = {}
        self.given_up: Set[asyncio.Task] = set()    # cancelled for that
        self.watch: Optional[asyncio.TimerHandle] = None
        # streams whose window was full, woken by the queue's eventfd
        self.window_waiters: List[asyncio.Future] = []
        self.batchers = {name: _Batcher(self, e)
                         for name, e in server.table.items()
                         if isinstance(e, BatchMethod)}
        self.closing = False

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
        waiters, self.window_waiters = self.window_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
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
        if self.server.stopping:
            _refuse(task)
        elif entry is None:
            _no_method(task, self.server.names)
        elif isinstance(entry, BatchMethod):
            self.batchers[task.method].add(task)
        elif entry.is_async or entry.stream:
            context = contextvars.copy_context()
            context.run(CURRENT.set, task)
            try:
                made = context.run(entry.fn, task.payload)
            except BaseException as exc:
                fail(task, exc)
                return
            if entry.stream:
                self.spawn(self.stream(task, made, entry.is_async), [task],
                           partial(self.stream_answer, task), context)
            else:
                self.spawn(made, [task], partial(answer, task), context)
        else:
            token = CURRENT.set(task)
            try:
                serve_plain(task, entry)
            finally:
                CURRENT.reset(token)

    async def stream(self, task: Any, gen: Any, is_async: bool) -> Any:
        """Sends what a generator (async or plain) yields; returns the
        final reply, or _ANSWERED.  A stream cancelled (its caller gave
        up, or close) closes the generator."""
        streaming = task.window > 0
        parts: List[bytes] = []
        ended = False
        try:
            while True:
                if is_async:
                    try:
                        item = await gen.__anext__()
                    except StopAsyncIteration:
                        final = None
                        break
                else:
                    try:
                        item = next(gen)
                    except StopIteration as stop:
                        final = stop.value
                        break
                data = reply_bytes(item)
                if not streaming:
                    parts.append(bytes(data))
                    continue
                why = await self.send(task, data)
                if why:
                    ended = True
                    await self.close_gen(gen, is_async)
                    _ended(task, why)
                    return _ANSWERED
            ended = True
        finally:
            if not ended:
                await self.close_gen(gen, is_async)
        if streaming:
            return final
        return b"".join(parts) + bytes(reply_bytes(final))

    @staticmethod
    async def close_gen(gen: Any, is_async: bool) -> None:
        if not is_async:
            _close(gen)
            return
        try:
            await gen.aclose()
        except Exception:
            log.exception("closing the async generator of a stream failed")

    async def send(self, task: Any, data: Any) -> Optional[str]:
        """task.send without blocking the loop: while the window is full,
        waits for the queue's eventfd (see on_ready) and sends again."""
        while True:
            why = task.send(data, 0)
            if why != "full":
                return why
            fut = self.loop.create_future()
            self.window_waiters.append(fut)
            await fut

    @staticmethod
    def stream_answer(task: Any, result: Any) -> None:
        if result is not _ANSWERED:
            answer(task, result)

    def spawn(self, coro: Any, tasks: List[Any],
              answer_with: Callable[[Any], None],
              context: Optional[contextvars.Context] = None) -> None:
        """Runs a handler's coroutine as an asyncio task that answers the
        calls: answer_with(its result), else its exception.  context: the
        task's (with CURRENT set), for a call served alone."""
        atask = self.loop.create_task(self.finish(coro, tasks, answer_with),
                                      context=context)
        self.pending[atask] = (tasks, coro)
        atask.add_done_callback(self.done)
        if self.watch is None:
            self.watch = self.loop.call_later(GAVE_UP_POLL,
                                              self.cancel_given_up)

    def cancel_given_up(self) -> None:
        """Cancels the handlers whose every caller gave up."""
        self.watch = None
        for atask, (tasks, _) in self.pending.items():
            if atask not in self.given_up and all(t.cancelled for t in tasks):
                self.given_up.add(atask)
                atask.cancel(GAVE_UP)
        if self.pending:
            self.watch = self.loop.call_later(GAVE_UP_POLL,
                                              self.cancel_given_up)

    def fail(self, tasks: List[Any], exc: BaseException) -> None:
        for task in tasks:
            if isinstance(exc, asyncio.CancelledError):
                task.respond(_cancelled_text(exc), STATUS_ERROR)
            else:
                fail(task, exc)

    async def finish(self, coro: Any, tasks: List[Any],
                     answer_with: Callable[[Any], None]) -> None:
        try:
            result = await coro
        except BaseException as exc:
            self.fail(tasks, exc)
        else:
            answer_with(result)

    def done(self, atask: asyncio.Task) -> None:
        tasks, coro = self.pending.pop(atask)
        self.given_up.discard(atask)
        try:
            if atask.cancelled():
                # cancelled before finish() started: nothing answered
                coro.close()
                try:
                    atask.result()
                except asyncio.CancelledError as exc:
                    self.fail(tasks, exc)
        finally:
            if self.closing:
                self.maybe_stop()

    def begin_close(self) -> None:
        """The queue is closed and empty: finish what is pending, then stop
        (stop() cancels what is left when the deadline nears)."""
        self.closing = True
        self.loop.remove_reader(self.queue.fd())
        for batcher in self.batchers.values():
            batcher.flush()
        self.maybe_stop()

    def threadsafe(self, fn: Callable[[], Any]) -> None:
        """Runs fn on the loop, from another thread, unless serving ended
        (the loop is closed)."""
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:
            pass

    def cancel_all(self) -> None:
        for batcher in self.batchers.values():
            batcher.refuse_waiting()
        running = [t for t in self.pending if not t.done()]
        if running:
            log.warning("%s: cancelling %d handler(s) still running at "
                        "close", self.server.config.handler, len(running))
        for atask in running:
            atask.cancel(CLOSED)

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

    def refuse_waiting(self) -> None:
        self._cancel_timer()
        for task in self.tasks:
            _refuse(task)
        self.tasks.clear()

    def flush(self) -> None:
        self._cancel_timer()
        while self.tasks:
            batch = self.tasks[:self.max_size]
            del self.tasks[:self.max_size]
            self.run(batch)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def run(self, batch: List[Any]) -> None:
        try:
            results = self.fn([t.payload for t in batch])
        except BaseException as exc:
            for task in batch:
                fail(task, exc)
            return
        if self.is_async:
            self.owner.spawn(results, batch, partial(self.answer, batch))
        else:
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
