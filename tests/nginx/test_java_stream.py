"""The Java runtime's streams, events and metadata in real nginx: chunks
in order, a slow reader whose stream stays within its window, a caller
that times out or whose client goes away mid-stream (the Java sink sees
the cancel), events reaching Lua handlers, metadata read by the handler
and carried into its log lines."""

import re
import socket

from javahelp import CALL, java_jar, java_lib, java_nginx  # noqa: F401

STREAM = CALL + """
location = /stream {
    content_by_lua_block { require("java_rt").stream() }
}
location = /event_stats {
    content_by_lua_block { require("java_rt").event_stats() }
}
"""
HTTP = "lua_shared_dict events 1m;"
INIT = 'require("java_rt").init_events()'


def start(java_nginx, cfg=""):
    return java_nginx(cfg=cfg, server=STREAM, http=HTTP, init_worker=INIT)


def call(ngx, method, payload="", query=""):
    """The reply text of /call?m=method (payload as the body)."""
    return ngx.request(f"/call?m={method}{query}", method="POST",
                       body=payload.encode()).text


def test_stream_in_order(java_nginx, balanced):
    ngx = start(java_nginx)
    r = ngx.get("/stream?m=stream_n&p=5")
    assert r.status == 200
    assert r.text == "".join(f"chunk {i}\n" for i in range(1, 6))
    assert r.headers.get("Transfer-Encoding") == "chunked"
    # a publisher, one chunk per line
    r = ngx.get("/stream?m=publish_lines&p=a%0Ab%0Ac&w=1")
    assert r.text == "a\nb\nc\n"
    # an error after two chunks: both came first
    r = ngx.get("/stream?m=stream_error")
    assert r.text == "one\ntwo\nERR runtime error 9: broke after two\n"
    # a stream method called plainly says how to call it
    r = ngx.get("/call?m=stream_n&p=3")
    assert r.status == 500 and "call it with rt:stream" in r.text
    # many streams at once
    rs = ngx.many([f"/stream?m=stream_n&p={i % 7 + 1}" for i in range(200)],
                  concurrency=32)
    for i, r in enumerate(rs):
        assert not isinstance(r, Exception), r
        assert r.text.count("chunk") == i % 7 + 1
    balanced(ngx, workers=1)


def test_slow_reader_stays_within_the_window(java_nginx, balanced):
    ngx = start(java_nginx)
    r = ngx.get("/stream?m=stream_size&p=100%201024&w=4&sleep=0.002")
    lines = r.text.splitlines()
    assert lines[:-1] == ["x" * 1024] * 100
    m = re.fullmatch(r"max_pending (\d+) window (\d+)", lines[-1])
    assert m, lines[-1]
    # the sender waited for the reader: never more than the window
    assert 1 <= int(m.group(1)) <= 4 and m.group(2) == "4"
    balanced(ngx, workers=1)


def test_caller_timeout_mid_stream(java_nginx, balanced):
    ngx = start(java_nginx)
    r = ngx.get("/stream?m=stream_forever&p=late&t=0.3&w=2&sleep=0.01")
    assert "tick 1\n" in r.text
    assert "ERR timeout" in r.text, r.text[-200:]
    # the Java sink saw it: its send threw CancellationException
    ngx.wait_log(r"stream_forever late cancelled after \d+ chunk")
    ngx.assert_log(r"sink\.cancelled true")
    ngx.get("/call?m=echo&p=still")          # serves on
    balanced(ngx, workers=1)


def test_client_abort_mid_stream(java_nginx, balanced):
    ngx = start(java_nginx)
    s = socket.create_connection(("127.0.0.1", ngx.port), 10)
    s.sendall(b"GET /stream?m=stream_forever&p=gone&w=2 HTTP/1.1\r\n"
              b"Host: x\r\n\r\n")
    got = b""
    while b"tick 3" not in got:
        data = s.recv(65536)
        assert data, got
        got += data
    s.close()
    ngx.wait_log(r"stream_forever gone cancelled after \d+ chunk.*the"
                 r" caller gave up")
    assert ngx.get("/call?m=echo&p=still").text == "still"
    balanced(ngx, workers=1)


def test_events_reach_lua_handlers(java_nginx, balanced):
    ngx = start(java_nginx)
    assert call(ngx, "emit", "reloaded v2") == "true"
    ngx.wait_log(r"java event reloaded: v2")
    # from a thread of the handler's own, outside any call
    assert call(ngx, "emit_later", "hello") == "started"
    ngx.wait_log(r"java event later: hello")
    # a burst keeps its order
    assert call(ngx, "emit_n", "50 10") == "50"
    lines = ngx.wait_log(r"java event burst: ", count=50)
    assert [re.search(r"burst: (\d+)", ln).group(1) for ln in lines] == \
        [str(i) for i in range(50)]
    stats = dict(ln.split() for ln in
                 ngx.get("/event_stats").text.splitlines())
    assert stats["emitted"] == stats["delivered"] == "52"
    assert stats["dropped"] == "0"
    balanced(ngx, workers=1)


def test_metadata_round_trip_and_log_lines(java_nginx, balanced):
    ngx = start(java_nginx)
    r = ngx.get("/call?m=meta&rid=req-42")
    assert r.text == "request_id=req-42;"
    assert ngx.get("/call?m=meta").text == ""
    r = ngx.get("/stream?m=meta&rid=req-43")
    assert r.text == "request_id=req-43;\n"
    # a line the method logs while it runs carries the request id
    assert call(ngx, "meta_log", "hello", "&rid=req-44") == "req-44"
    (line,) = ngx.wait_log(r"meta_log hello")
    assert "req-44" in line, line
    assert "nbffi.lua:" not in line, line
    # deadlines: the request exposes them
    assert ngx.get("/call?m=deadline&t=5").text == "future"
    balanced(ngx, workers=1)


def test_streams_on_virtual_threads(java_nginx, balanced):
    from javahelp import newer_jdk
    import pytest
    jdk = newer_jdk()
    if jdk is None:
        pytest.skip("no Java 21")
    ngx = start(java_nginx, cfg=f"executor=virtual\njava_home={jdk}\n")
    rs = ngx.many([f"/stream?m=stream_n&p={i % 5 + 1}&w=1"
                   for i in range(100)], concurrency=32)
    for i, r in enumerate(rs):
        assert not isinstance(r, Exception), r
        assert r.text.count("chunk") == i % 5 + 1
    balanced(ngx, workers=1)
