"""The Go shim's streams, events and metadata through real nginx, with the
gRPC example (examples/go-grpc): a server stream relayed to the HTTP
client chunk by chunk, a slow reader, a caller that times out or goes away
mid-stream, a watch turned into events in a lua_shared_dict, and the
request id carried to the gRPC server and into the runtime's log lines."""

import http.client
import json
import time

import pytest

from gohelp import EXAMPLE, greeter, greeter_bin, grpc_lib  # noqa: F401

WATCH_HTTP = "lua_shared_dict greetings 1m;"

ID_HEADER = "add_header X-Request-Id $request_id always;\n"

END_LOG = """
log_by_lua_block {
    if ngx.var.uri == "/hellos/stream" then
        ngx.log(ngx.NOTICE, "stream request done: ", ngx.var.request_id)
    end
}
"""

SLOW = """
location = /slow {
    content_by_lua_block {
        -- reads a stream of 50 messages slowly, with a window of 2, and
        -- reports the most chunks it ever found waiting
        local rt = require("greeter").runtime()
        local iter, st = rt:stream("SayHellos", '{"name":"slow","count":50}',
                                   { window = 2, timeout = 30 })
        local n, most = 0, 0
        for chunk, err in iter, st do
            if not chunk then
                return ngx.say("error: ", err)
            end
            n = n + 1
            local waiting, window = st:pending()
            most = math.max(most, waiting)
            ngx.sleep(0.002)    -- the slow reader
        end
        ngx.say(n, " ", most)
    }
}
"""


@pytest.fixture
def stream_nginx(nginx, grpc_lib):
    """stream_nginx(target, watch=None, server="", **kw): nginx whose
    worker loads the example's runtime (with the watch, if given), serving
    the example's locations, the request id in a response header and the
    server block."""
    def start(target, watch=None, server="", **kw):
        w = "nil"
        if watch:
            w = (f'{{ name = "{watch["name"]}", '
                 f'delayMs = {watch["delayMs"]} }}')
        init = f'require("greeter").init("{grpc_lib}", "{target}", {w})'
        return nginx(init_worker=init, lua_path=[EXAMPLE / "?.lua"],
                     http=WATCH_HTTP,
                     server=ID_HEADER + f"include {EXAMPLE / 'locations.conf'};"
                     + "\n" + END_LOG + server, **kw)
    return start


def open_stream(ngx, path):
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    return conn, r


def test_stream_relayed_chunk_by_chunk(greeter, stream_nginx):
    ngx = stream_nginx(greeter().addr)
    conn, r = open_stream(ngx, "/hellos/stream?name=s&count=3&delay_ms=300")
    try:
        assert r.status == 200
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.headers["Content-Type"] == "application/x-ndjson"
        rid = r.headers["X-Request-Id"]
        first = r.readline()
        assert json.loads(first) == {"message": "Hello #1, s"}
        # the first message reached the client while the stream still ran
        ngx.assert_no_log("stream request done: " + rid)
        rest = r.read().splitlines()
    finally:
        conn.close()
    assert [json.loads(x) for x in rest] == \
        [{"message": f"Hello #{i}, s"} for i in (2, 3)]
    ngx.wait_log("stream request done: " + rid)


def test_plain_call_still_gathers(greeter, stream_nginx):
    ngx = stream_nginx(greeter().addr)
    r = ngx.get("/hellos?name=p&count=2")
    assert json.loads(r.body) == {"replies": [{"message": "Hello #1, p"},
                                              {"message": "Hello #2, p"}]}


def test_slow_reader_is_bounded(greeter, stream_nginx):
    # The Go handler's sends wait for the reader: never more than the
    # window of 2 chunks wait in nbffi.
    ngx = stream_nginx(greeter().addr, server=SLOW)
    r = ngx.get("/slow")
    assert r.text == "50 2\n" or r.text == "50 1\n", r.text


def test_caller_timeout_mid_stream(greeter, stream_nginx, balanced):
    # Each message comes after 200 ms; the call allows 0.5 s.  The Go
    # handler returns ctx.Err() at the deadline, which Lua reports as its
    # own "timeout" (not as a runtime error), after the messages that came.
    ngx = stream_nginx(greeter().addr)
    paths = [f"/hellos/stream?name=t{i}&count=10&delay_ms=200&timeout=0.5"
             for i in range(20)]
    for i, r in enumerate(ngx.many(paths, concurrency=20)):
        assert not isinstance(r, Exception), r
        lines = [json.loads(x) for x in r.body.splitlines()]
        assert lines[-1] == {"error": "timeout"}, lines
        assert lines[:-1] == [{"message": f"Hello #{k}, t{i}"}
                              for k in range(1, len(lines))]
    balanced(ngx, workers=1)


@pytest.mark.parametrize("check_abort", ["on", "off"])
def test_client_abort_mid_stream(greeter, stream_nginx, balanced,
                                 check_abort):
    # The client reads one message and goes away: the request is aborted
    # (lua_check_client_abort on: the sweep finds the reader gone), or
    # the example's flush fails and it closes the stream (off).  Either
    # way the stream is cancelled, the Go handler's ctx with it, and the
    # gRPC stream with that.
    ngx = stream_nginx(greeter().addr,
                       server=f"lua_check_client_abort {check_abort};\n")
    conn, r = open_stream(ngx, "/hellos/stream?name=gone&count=1000"
                          "&delay_ms=20")
    assert json.loads(r.readline()) == {"message": "Hello #1, gone"}
    conn.sock.close()
    conn.close()
    ngx.wait_log(r'SayHellos "gone": the caller is gone')
    # the worker serves on, and everything is freed at exit
    r = ngx.get("/hellos/stream?name=after&count=1")
    assert json.loads(r.body) == {"message": "Hello #1, after"}
    balanced(ngx, workers=1)


def test_watch_events_update_a_shared_dict(greeter, stream_nginx):
    # The runtime watches a server stream from its start and emits each
    # message as an event; the worker's handler stores it in a shared dict.
    ngx = stream_nginx(greeter().addr,
                       watch={"name": "watcher", "delayMs": 10})
    end = time.monotonic() + 10
    while True:
        body = json.loads(ngx.get("/watched").body)
        if body["count"] >= 5:
            break
        assert time.monotonic() < end, body
        time.sleep(0.02)
    # in order: the last one stored is the count-th message of the stream
    assert body["last"] == {"message": f"Hello #{body['count']}, watcher"} \
        or body["count"] > 1000, body


def test_request_id_round_trip_and_log_lines(greeter, stream_nginx):
    # Lua passes the request id as metadata; Go sends it to the gRPC server
    # as x-request-id and logs the id the server sent back; the line
    # carries the request id as its metadata too.
    ngx = stream_nginx(greeter().addr)
    r = ngx.get("/hello?name=meta")
    assert json.loads(r.body) == {"message": "Hello, meta"}
    rid = r.headers["X-Request-Id"]
    lines = ngx.wait_log(rf'SayHello "meta": the server saw request id {rid}')
    assert lines[0].count(rid) >= 2, lines[0]
    # a line the handler logs itself, with the caller's request id
    line = ngx.wait_log(r'SayHello "meta"(?!:)')[0]
    assert rid in line, line
    ngx.assert_no_log(r"\[lua\] nbffi\.lua:\d+: drain_logs\(\).*SayHello")


def test_deadline_is_a_timeout_not_a_runtime_error(greeter, stream_nginx):
    # 20 streams whose first message would come after 1 s, with 50 ms to
    # live: the Go handler returns ctx.Err() at the deadline, at the same
    # time as Lua gives up; every caller sees its own "timeout", never
    # "runtime error ...: context deadline exceeded".
    ngx = stream_nginx(greeter().addr)
    paths = [f"/hellos/stream?name=d{i}&count=1&delay_ms=1000&timeout=0.05"
             for i in range(20)]
    for r in ngx.many(paths, concurrency=20):
        assert not isinstance(r, Exception), r
        assert json.loads(r.body) == {"error": "timeout"}, r.body
