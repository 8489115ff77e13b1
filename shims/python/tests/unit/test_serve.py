"""Serving, through nbffi.testing: the loader's code path minus the C
queue.  (tests/loader and tests/nginx run the same through the real core.)"""

import json
import threading

import pytest

from nbffi import STATUS_ERROR, STATUS_NO_METHOD
from nbffi._log import LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_WARN
from nbffi.testing import CallError, LoadError, Runtime


def runtime(module, source, handler="", **cfg):
    name, where = module(source)
    return Runtime({"handler": name + handler, "path": [where], **cfg})


SYNC = """
    import threading
    import nbffi

    def echo(p): return p
    def text(p): return p.decode()[::-1]
    def nothing(p): return None
    def array(p): return bytearray(p) + b"!"
    def view(p): return memoryview(p)[1:]
    def number(p): return 3
    def coro(p):
        async def c(): return p
        return c()
    def boom(p): raise ValueError(f"bad {p!r}")
    def refuse(p): raise nbffi.Error("no thanks", status=42)
    def exits(p): raise SystemExit(3)
    def thread(p): return threading.current_thread().name
"""


def test_sync_replies(module):
    with runtime(module, SYNC) as rt:
        assert rt.call("echo", b"\0abc\xff") == b"\0abc\xff"
        assert rt.call("text", "héllo €".encode()) == "€ olléh".encode()
        assert rt.call("nothing", b"x") == b""
        assert rt.call("array", b"ab") == b"ab!"
        assert rt.call("view", b"abc") == b"bc"
        assert rt.call("echo", b"z" * (8 << 20)) == b"z" * (8 << 20)
        # handlers run on the runtime's thread, not the caller's
        assert rt.call("thread", b"") == b"nbffi-testing"


@pytest.mark.parametrize("method, status, first_line", [
    ("number", STATUS_ERROR,
     "TypeError: handler returned int, expected bytes, str or None"),
    ("coro", STATUS_ERROR, "TypeError: handler returned a coroutine: "
                           "declare it async def so that the runtime "
                           "awaits it"),
    ("boom", STATUS_ERROR, "ValueError: bad b'x'"),
    ("refuse", 42, "no thanks"),
    ("exits", STATUS_ERROR, "SystemExit: 3"),
    ("missing", STATUS_NO_METHOD, "no method 'missing'; methods: array, "
                                  "boom, coro, echo, exits, nothing, number, "
                                  "refuse, text, thread, view"),
])
def test_error_replies_keep_serving(module, method, status, first_line):
    with runtime(module, SYNC) as rt:
        with pytest.raises(CallError) as e:
            rt.call(method, b"x")
        assert e.value.status == status
        assert e.value.message.split("\n")[0] == first_line
        assert rt.call("echo", b"after") == b"after"


def test_exception_text_has_the_handlers_traceback(module):
    with runtime(module, SYNC) as rt:
        with pytest.raises(CallError) as e:
            rt.call("boom", b"x")
    lines = e.value.message.split("\n")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[2].endswith(", in boom") and "t_unit_" in lines[2]
    assert "nbffi/" not in e.value.message      # our frames are left out
    # a refused call carries the message only
    with runtime(module, SYNC) as rt:
        with pytest.raises(CallError) as e:
            rt.call("refuse", b"")
    assert e.value.message == "no thanks"


ASYNC = """
    import asyncio

    class Gate:
        def __init__(self):
            self.event = asyncio.Event()
            self.waiting = 0
        async def wait(self, p):
            self.waiting += 1
            await self.event.wait()
            return p
        def open(self, p):
            self.event.set()
            return b"open"
        def count(self, p):
            return str(self.waiting)
        async def boom(self, p):
            await asyncio.sleep(0)
            raise KeyError(p.decode())
        async def forever(self, p):
            await asyncio.Event().wait()
"""


def test_async_calls_overlap(module):
    with runtime(module, ASYNC, ":Gate") as rt:
        waits = [rt.submit("wait", b"%d" % i) for i in range(500)]
        # every wait is pending at once, or open would never be reached
        assert rt.call("open", b"") == b"open"
        assert [f.result(10) for f in waits] == \
            [(0, b"%d" % i) for i in range(500)]
        assert rt.call("count", b"") == b"500"
        with pytest.raises(CallError, match="KeyError: 'k'"):
            rt.call("boom", b"k")


def test_close_waits_for_pending_async_calls(module):
    rt = runtime(module, ASYNC, ":Gate")
    waits = [rt.submit("wait", b"w") for _ in range(10)]
    opened = rt.submit("open", b"")
    rt.close()
    assert opened.result(0) == (0, b"open")
    assert all(f.result(0) == (0, b"w") for f in waits)


def test_close_timeout_cancels_what_is_left(module):
    rt = runtime(module, ASYNC, ":Gate", close_timeout=0.05)
    stuck = [rt.submit("forever", b"") for _ in range(3)]
    rt.close()
    for f in stuck:
        status, text = f.result(0)
        assert (status, text) == (STATUS_ERROR, b"python: cancelled: the "
                                  b"runtime was closed and the handler "
                                  b"still ran")


BATCH = """
    import asyncio
    import json
    import nbffi

    class B:
        def __init__(self):
            self.sizes = []

        @nbffi.batch(max_size=4, max_wait_ms=60000)
        def full_batch(self, ps):
            self.sizes.append(len(ps))
            return [p.upper() if p != b"bad" else ValueError("bad item")
                    for p in ps]

        @nbffi.batch(max_size=100, max_wait_ms=20)
        def timed_batch(self, ps):
            self.sizes.append(len(ps))
            return ps

        def short_batch(self, ps):
            return ps[1:]

        def raises_batch(self, ps):
            raise RuntimeError("whole batch")

        async def later_batch(self, ps):
            await asyncio.sleep(0)
            return [p[::-1] for p in ps]

        def sizes_seen(self, p):
            return json.dumps(self.sizes)
"""


def test_full_batches_run_without_waiting(module):
    with runtime(module, BATCH, ":B") as rt:
        fs = [rt.submit("full", p) for p in
              [b"a", b"b", b"bad", b"d", b"e", b"f", b"g", b"h"]]
        results = [f.result(10) for f in fs]
        assert results[2][0] == STATUS_ERROR
        assert results[2][1].startswith(b"ValueError: bad item")
        assert [r for i, r in enumerate(results) if i != 2] == \
            [(0, p) for p in [b"A", b"B", b"D", b"E", b"F", b"G", b"H"]]
        assert json.loads(rt.call("sizes_seen", b"")) == [4, 4]


def test_a_partial_batch_runs_after_max_wait(module):
    with runtime(module, BATCH, ":B") as rt:
        fs = [rt.submit("timed", b"%d" % i) for i in range(3)]
        assert [f.result(10) for f in fs] == [(0, b"0"), (0, b"1"), (0, b"2")]


def test_batch_failures_answer_every_call(module):
    with runtime(module, BATCH, ":B") as rt:
        with pytest.raises(CallError, match="RuntimeError: whole batch"):
            rt.call("raises", b"x")
        with pytest.raises(CallError, match="short_batch returned 0 results "
                                            "for 1 payloads"):
            rt.call("short", b"x")
        assert rt.call("later", b"abc") == b"cba"


def test_close_runs_a_waiting_batch(module):
    rt = runtime(module, BATCH, ":B")
    f = rt.submit("full", b"x")         # waits 60 s for 3 more
    rt.close()
    assert f.result(0) == (0, b"X")


def test_close_hook_runs_once_after_the_last_call(module, tmp_path):
    marker = tmp_path / "closed"
    rt = runtime(module, f"""
        import pathlib
        class H:
            def echo(self, p): return p
            def close(self):
                with open({str(marker)!r}, "a") as f:
                    f.write("closed\\n")
    """, ":H")
    fs = [rt.submit("echo", b"%d" % i) for i in range(100)]
    rt.close()
    assert all(f.result(0)[0] == 0 for f in fs)
    assert marker.read_text() == "closed\n"
    with pytest.raises(CallError, match="no method 'close'"):
        with runtime(module, "class H:\n def close(self): pass\n"
                             " def x(self, p): return p\n", ":H") as rt2:
            rt2.call("close", b"")


def test_logging_reaches_the_queue_with_levels(module):
    src = """
        import logging, threading
        log = logging.getLogger("h")
        def emit(p):
            log.debug("d"); log.info("i"); log.warning("w"); log.error("e")
            log.critical("c")
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("oops")
            return b""
        def from_thread(p):
            t = threading.Thread(target=lambda: log.warning("from thread"))
            t.start(); t.join()
            return b""
    """
    with runtime(module, src, log_level="DEBUG") as rt:
        rt.call("emit", b"")
        rt.call("from_thread", b"")
        logs = rt.logs
    assert logs[0][0] == LOG_INFO and logs[0][1].startswith("nbffi: serving")
    assert logs[1:6] == [(LOG_DEBUG, "h: d"), (LOG_INFO, "h: i"),
                         (LOG_WARN, "h: w"), (LOG_ERR, "h: e"),
                         (LOG_ERR, "h: c")]
    assert logs[6][0] == LOG_ERR and logs[6][1].startswith("h: oops\n")
    assert "ZeroDivisionError: division by zero" in logs[6][1]
    # a thread the handler started logs through the runtime too
    assert logs[7] == (LOG_WARN, "h: from thread")


def test_log_level_filters(module):
    src = """
        import logging
        def emit(p):
            logging.getLogger("h").info("quiet")
            logging.getLogger("h").warning("loud")
            return b""
    """
    with runtime(module, src, log_level="WARNING") as rt:
        rt.call("emit", b"")
        assert rt.logs == [(LOG_WARN, "h: loud")]


@pytest.mark.parametrize("cfg, message", [
    ({"handler": "no_such_module_xyz"},
     "python: cannot load handler 'no_such_module_xyz': ModuleNotFoundError: "
     "No module named 'no_such_module_xyz'"),
    ({"handler": "json:nope"},
     "python: cannot load handler 'json:nope': AttributeError: module "
     "'json' has no attribute 'nope'"),
    ({"handler": "json", "bogus": 1}, "python cfg: unknown cfg key(s) bogus"),
    ({"handler": "json:JSONDecoder", "batch": {"x": {}}},
     "python cfg: handler 'json:JSONDecoder': \"batch\" names x"),
])
def test_load_errors(cfg, message):
    with pytest.raises(LoadError) as e:
        Runtime(cfg)
    assert str(e.value).startswith(message)


def test_load_error_shows_the_failing_line(module):
    name, where = module("x = 1\ndef broken(:\n    pass\n")
    with pytest.raises(LoadError) as e:
        Runtime({"handler": name, "path": [where]})
    text = str(e.value)
    assert text.startswith(f"python: cannot load handler '{name}': "
                           f"SyntaxError: invalid syntax")
    assert f"{name}.py\", line 2" in text and "def broken(:" in text


def test_concurrent_callers(module):
    with runtime(module, SYNC) as rt:
        out = {}

        def caller(i):
            out[i] = [rt.call("echo", b"%d-%d" % (i, j)) for j in range(200)]
        threads = [threading.Thread(target=caller, args=(i,))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == {i: [b"%d-%d" % (i, j) for j in range(200)]
                       for i in range(8)}


def test_testing_runtime_close_is_idempotent(module):
    rt = runtime(module, SYNC)
    rt.close()
    rt.close()
    with pytest.raises(RuntimeError, match="runtime closed"):
        rt.call("echo", b"")
