"""Streams, events, metadata and deadlines, through nbffi.testing: the
loader's code path minus the C queue (tests/nginx/test_python_stream.py
runs the same through the real core and Lua)."""

import json

import pytest

from nbffi import STATUS_ERROR
from nbffi._log import LOG_INFO, LOG_WARN
from nbffi.testing import CallError, Runtime


def runtime(module, source, handler="", **cfg):
    name, where = module(source)
    return Runtime({"handler": name + handler, "path": [where], **cfg})


GENERATORS = """
    import asyncio
    import threading
    import nbffi

    class G:
        def __init__(self):
            self.closed = threading.Event()
            self.sent = 0
            self.gate = None

        def count(self, p):
            for i in range(int(p)):
                self.sent = i + 1
                yield b"%d;" % i
            return b"done"

        async def acount(self, p):
            for i in range(int(p)):
                await asyncio.sleep(0)
                self.sent = i + 1
                yield "%d;" % i

        def endless(self, p):
            try:
                i = 0
                while True:
                    yield b"x" * 10
                    i += 1
                    self.sent = i
            finally:
                self.closed.set()

        async def aendless(self, p):
            try:
                while True:
                    yield b"y"
                    self.sent += 1
            finally:
                self.closed.set()

        async def await_forever(self, p):
            try:
                yield b"first"
                await asyncio.Event().wait()
            finally:
                self.closed.set()

        def broken(self, p):
            yield b"one"
            raise ValueError("two")

        def wrong(self, p):
            yield 3

        async def wait_closed(self, p):
            closed = await asyncio.get_running_loop().run_in_executor(
                None, self.closed.wait, 30)
            return b"yes" if closed else b"no"

        def sent_so_far(self, p):
            return str(self.sent)
"""


@pytest.fixture(params=["count", "acount"])
def counter(request):
    return request.param


def test_a_generator_streams_what_it_yields(module, counter):
    with runtime(module, GENERATORS, ":G") as rt:
        with rt.stream(counter, b"50", window=4) as s:
            chunks = list(s)
        assert chunks == [b"%d;" % i for i in range(50)]
        assert s.reply == (b"done" if counter == "count" else b"")


def test_a_generator_called_plainly_replies_with_the_chunks_joined(
        module, counter):
    with runtime(module, GENERATORS, ":G") as rt:
        tail = b"done" if counter == "count" else b""
        assert rt.call(counter, b"3") == b"0;1;2;" + tail


def test_a_slow_reader_holds_the_generator_to_the_window(module, counter):
    with runtime(module, GENERATORS, ":G") as rt:
        with rt.stream(counter, b"40", window=3) as s:
            read = 0
            while s.read() is not None:
                read += 1
                # the generator is at most the window (+ the chunk it is
                # sending) ahead of the reader
                assert int(rt.call("sent_so_far", b"")) <= read + 3 + 1
                assert s.buffered <= 3
        assert read == 40


@pytest.mark.parametrize("method", ["endless", "aendless", "await_forever"])
def test_a_reader_that_stops_closes_the_generator(module, method):
    with runtime(module, GENERATORS, ":G") as rt:
        with rt.stream(method, b"", window=2) as s:
            assert s.read() is not None
        # the reader left: the send waiting on the full window returns
        # "cancelled" (or the cancel watch cancels the async handler)
        assert rt.call("wait_closed", b"", timeout=40) == b"yes"


def test_a_stream_that_raises_ends_with_the_error(module):
    with runtime(module, GENERATORS, ":G") as rt:
        with rt.stream("broken", b"") as s:
            assert s.read() == b"one"
            with pytest.raises(CallError) as e:
                s.read()
        assert e.value.status == STATUS_ERROR
        assert e.value.message.startswith("ValueError: two")
        with pytest.raises(CallError, match="TypeError: handler returned "
                                            "int"):
            list(rt.stream("wrong", b""))


CONTEXT = """
    import asyncio
    import json
    import logging
    import threading
    import nbffi

    log = logging.getLogger("ctx")

    def meta(p):
        log.info("serving %s", p.decode())
        return json.dumps(nbffi.current().meta)

    async def ameta(p):
        await asyncio.sleep(0)
        log.warning("async %s", p.decode())
        return json.dumps(nbffi.current().meta)

    def gmeta(p):
        for key, value in sorted(nbffi.current().meta.items()):
            log.info("chunk %s", key)
            yield f"{key}={value};"

    def deadline(p):
        call = nbffi.current()
        return json.dumps([call.deadline is not None, call.remaining(),
                           call.cancelled, call.streaming, call.method])

    def outside(p):
        def work():
            try:
                nbffi.current()
                seen.append("current in a thread")
            except LookupError:
                seen.append(nbffi.emit("from-thread", b"t"))
        seen = []
        t = threading.Thread(target=work)
        t.start()
        t.join()
        return repr(seen)

    def emit(p):
        name, _, data = p.partition(b"=")
        return str(nbffi.emit(name.decode(), data))

    cancelled = threading.Event()

    async def gave_up(p):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            logging.getLogger("ctx").info("cancelled, caller gave up: %s",
                                          nbffi.current().cancelled)
            cancelled.set()
            raise

    async def wait_cancelled(p):
        done = await asyncio.get_running_loop().run_in_executor(
            None, cancelled.wait, 30)
        return str(done)
"""


def test_metadata_is_readable_in_every_kind_of_handler(module):
    meta = {"request_id": "r-1", "traceparent": "00-ab-cd-01"}
    with runtime(module, CONTEXT) as rt:
        assert json.loads(rt.call("meta", b"a", meta=meta)) == meta
        assert json.loads(rt.call("ameta", b"b", meta=meta)) == meta
        assert json.loads(rt.call("meta", b"c")) == {}
        with rt.stream("gmeta", b"", meta=meta) as s:
            assert list(s) == [b"request_id=r-1;",
                               b"traceparent=00-ab-cd-01;"]


def test_log_lines_written_during_a_call_carry_its_metadata(module):
    with runtime(module, CONTEXT) as rt:
        rt.call("meta", b"one", meta={"request_id": "r-1"})
        rt.call("ameta", b"two", meta={"request_id": "r-2"})
        list(rt.stream("gmeta", b"", meta={"request_id": "r-3"}))
        rt.call("meta", b"three")
    assert (LOG_INFO, "ctx: serving one", {"request_id": "r-1"}) \
        in rt.call_logs
    assert (LOG_WARN, "ctx: async two", {"request_id": "r-2"}) \
        in rt.call_logs
    assert (LOG_INFO, "ctx: chunk request_id", {"request_id": "r-3"}) \
        in rt.call_logs
    assert (LOG_INFO, "ctx: serving three", {}) in rt.call_logs


def test_handlers_read_their_deadline(module):
    with runtime(module, CONTEXT) as rt:
        has, left, cancelled, streaming, method = json.loads(
            rt.submit("deadline", b"", deadline=30).result(10)[1])
        assert has and 0 < left <= 30 and not cancelled and not streaming
        assert method == "deadline"
        has, left, _, _, _ = json.loads(rt.call("deadline", b""))
        assert not has and left is None


def test_an_async_handler_whose_caller_gave_up_is_cancelled(module):
    with runtime(module, CONTEXT) as rt:
        f = rt.submit("gave_up", b"", meta={"request_id": "gone"})
        f.cancel()
        assert rt.call("wait_cancelled", b"", timeout=40) == b"True"
        assert rt.call_logs == [(LOG_INFO, "ctx: cancelled, caller gave up: "
                                 "True", {"request_id": "gone"})]


def test_events_are_emitted_in_order(module):
    with runtime(module, CONTEXT) as rt:
        for i in range(5):
            assert rt.call("emit", b"tick=%d" % i) == b"True"
        assert [rt.events.get(timeout=5) for _ in range(5)] == \
            [("tick", b"%d" % i) for i in range(5)]
        # outside a call, from a thread the handler started
        assert rt.call("outside", b"") == b"[True]"
        assert rt.events.get(timeout=5) == ("from-thread", b"t")
        with pytest.raises(CallError, match="ValueError: emit: bad event"):
            rt.call("emit", b"=x")
        rt.queue.max_events = 0
        assert rt.call("emit", b"drop=x") == b"False"



PLAIN_GENERATORS = """
    import threading

    closed = threading.Event()

    def count(p):
        for i in range(int(p)):
            yield b"%d;" % i

    def endless(p):
        try:
            while True:
                yield b"z"
        finally:
            closed.set()

    def was_closed(p):
        return str(closed.is_set())
"""


def test_plain_generators_stream_in_the_blocking_mode(module):
    with runtime(module, PLAIN_GENERATORS) as rt:
        with rt.stream("count", b"30", window=2) as s:
            assert list(s) == [b"%d;" % i for i in range(30)]
        assert rt.call("count", b"2") == b"0;1;"
        with rt.stream("endless", b"", window=2) as s:
            assert s.read() == b"z"
        # the send blocked on the full window returned "cancelled"
        assert rt.call("was_closed", b"", timeout=30) == b"True"
