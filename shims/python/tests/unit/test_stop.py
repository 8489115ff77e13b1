"""Stopping within the host's deadline, and cancelling the async calls of
callers that gave up, through nbffi.testing (Runtime.close(timeout) runs
what the loader's fini runs)."""

import asyncio
import json
import warnings

import pytest

from nbffi import STATUS_ERROR, _embed
from nbffi._log import LOG_WARN
from nbffi._serve import STOP_MARGIN_NS, stop_times
from nbffi.testing import Queue, Runtime, Task

S = 1_000_000_000

# Handlers that never return, and a record of what they saw, shared with
# the test through a module the handler imports.
STUCK = """
    import asyncio
    import threading
    import time
    import nbffi

    seen = []
    cancelled = threading.Event()

    def spin(p):
        try:
            while True:
                pass
        except nbffi.Interrupted as exc:
            seen.append(str(exc))
            raise

    def sleep(p):
        time.sleep(10 ** 6)

    def echo(p):
        return p

    async def forever(p):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            seen.append(exc.args[0])
            cancelled.set()
            raise

    async def async_spin(p):
        while True:
            pass
"""


def stuck(module, **cfg):
    name, where = module(STUCK)
    rt = Runtime({"handler": name, "path": [where], **cfg})
    return rt, __import__(name)


@pytest.mark.parametrize("now, deadline, close_timeout, cancel, interrupt", [
    # the margin before the deadline: half the time left, at most 1 s
    (0, 3 * S, 30, 2 * S, 2 * S + S // 2),
    (0, S // 2, 30, S // 4, S // 4 + S // 8),
    # close_timeout first when it comes sooner
    (0, 10 * S, 1, S, S + 9 * S // 2),
    # no deadline: close_timeout, then half the margin
    (5, 0, 2, 5 + 2 * S, 5 + 2 * S + STOP_MARGIN_NS // 2),
    # a deadline already past: at once
    (10 * S, 9 * S, 30, 9 * S, 9 * S),
])
def test_stop_times(now, deadline, close_timeout, cancel, interrupt):
    assert stop_times(now, deadline, close_timeout) == (cancel, interrupt)


def test_a_spinning_handler_is_interrupted_and_the_queue_refused(module):
    rt, mod = stuck(module)
    spinning = rt.submit("spin", b"")
    queued = [rt.submit("echo", b"%d" % i) for i in range(3)]
    assert rt.close(timeout=2) == 0
    status, text = spinning.result(0)
    assert status == STATUS_ERROR
    assert text.startswith(b"nbffi.Interrupted: the runtime was closed and "
                           b"the handler still ran\nTraceback")
    assert mod.seen == ["the runtime was closed and the handler still ran"]
    assert [f.result(0) for f in queued] == \
        [(STATUS_ERROR, b"python: the runtime was closed before this call "
                        b"started")] * 3
    # logged by stop(), on the closing thread, through this runtime
    assert (LOG_WARN, f"nbffi: {mod.__name__}: interrupting the runtime "
                      f"thread, still busy after the cancel") in rt.logs


def test_a_handler_blocked_in_c_code_stays(module):
    rt, _ = stuck(module)
    sleeping = rt.submit("sleep", b"")
    # the thread is left in time.sleep, a daemon: the close still ends
    assert rt.close(timeout=0.5) == 1
    assert not sleeping.done()
    assert rt.close() == 1


def test_an_async_handler_awaiting_forever_is_cancelled(module):
    rt, mod = stuck(module)
    waiting = [rt.submit("forever", b"") for _ in range(5)]
    assert rt.close(timeout=2) == 0
    assert [f.result(0) for f in waiting] == \
        [(STATUS_ERROR, b"python: cancelled: the runtime was closed and the "
                        b"handler still ran")] * 5
    assert mod.seen == ["cancelled: the runtime was closed and the handler "
                        "still ran"] * 5


def test_an_async_handler_that_never_awaits_is_interrupted(module):
    rt, _ = stuck(module)
    spinning = rt.submit("async_spin", b"")
    assert rt.close(timeout=2) == 0
    status, text = spinning.result(0)
    assert status == STATUS_ERROR and text.startswith(b"nbffi.Interrupted: ")


def test_a_caller_that_gives_up_cancels_its_async_handler(module):
    rt, mod = stuck(module)
    with rt:
        gone = rt.submit("forever", b"")
        kept = rt.submit("forever", b"")
        assert gone.cancel()
        assert mod.cancelled.wait(10)
        assert mod.seen == ["cancelled: the caller gave up"]
        assert not kept.done()
        assert rt.call("echo", b"serving") == b"serving"
        assert rt.close(timeout=2) == 0
    assert kept.result(0)[0] == STATUS_ERROR



def test_a_call_cancelled_before_its_handler_started_is_answered(module):
    # The loop's own steps, driven here: a cancel can reach a handler's
    # task before its first step (a stop racing a dispatch)
    name, where = module(STUCK)
    server, error = _embed.start(Queue(), json.dumps(
        {"handler": name, "path": [where]}).encode())
    assert error == ""
    aloop, task = server.loop, Task("forever", b"")
    aloop.dispatch(task)
    aloop.cancel_all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # "never awaited": not closed
        aloop.loop.run_until_complete(asyncio.sleep(0))
    assert task._reply.result(0) == \
        (STATUS_ERROR, b"python: cancelled: the runtime was closed and the "
                       b"handler still ran")
    assert aloop.pending == {}
    aloop.loop.close()
