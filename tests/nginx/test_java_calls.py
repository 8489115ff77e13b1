"""Calls into a Java handler through nginx: sync and async replies, zero-copy
payload views, large payloads, exceptions, logging, concurrency."""

import hashlib
import os

from javahelp import java_jar, java_lib, java_nginx  # noqa: F401


def call(ngx, method, payload=b"", **kw):
    return ngx.request(f"/call?m={method}", method="POST", body=payload, **kw)


def test_sync_and_async_methods(java_nginx, balanced):
    ngx = java_nginx()
    for method in ("echo", "echo_view", "async_echo", "async_view"):
        r = call(ngx, method, b"hello java")
        assert (r.status, r.body) == (200, b"hello java"), method
    assert call(ngx, "upper", b"shout").body == b"SHOUT"
    assert (call(ngx, "nothing", b"x").status,
            call(ngx, "nothing", b"x").body) == (200, b"")
    assert call(ngx, "len", b"").body == b"0"
    balanced(ngx, workers=1)


def test_large_payloads(java_nginx, balanced):
    ngx = java_nginx()
    for size in (1, 511, 16384, 1 << 20, 8 << 20):
        body = os.urandom(size)
        for method in ("echo", "echo_view", "async_view"):
            r = call(ngx, method, body)
            assert r.status == 200, (method, size, r.body[:300])
            assert hashlib.sha256(r.body).digest() == \
                hashlib.sha256(body).digest(), (method, size)
    r = ngx.get("/call?m=make&p=20000000")
    assert (r.status, len(r.body)) == (200, 20000000)
    balanced(ngx, workers=1)


def test_exception_is_an_error_reply_and_the_runtime_keeps_serving(
        java_nginx, balanced):
    ngx = java_nginx()
    r = call(ngx, "throw", b"boom")
    assert r.status == 500 and r.headers["X-Status"] == "1"
    assert r.text.startswith("runtime error 1: java.lang.IllegalStateException"
                             ": boom\n\tat io.nbffi.it.TestHandler")
    assert "Caused by: java.io.IOException: the cause" in r.text

    r = call(ngx, "async_throw", b"later")
    assert r.status == 500
    assert r.text.startswith("runtime error 1: java.lang."
                             "UnsupportedOperationException: later")

    r = call(ngx, "error", b"not found")
    assert (r.status, r.text) == (500, "runtime error 7: not found")

    r = call(ngx, "overflow")
    assert "java.lang.StackOverflowError: deep" in r.text

    r = call(ngx, "nope")
    assert r.status == 500
    assert r.text.startswith("runtime error 2: no method 'nope' (serves: "
                             "echo, echo_view, upper,")

    assert call(ngx, "echo", b"alive").body == b"alive"
    balanced(ngx, workers=1)


def test_many_concurrent_calls(java_nginx, balanced):
    ngx = java_nginx(cfg="threads=4\n")
    cases = []
    for i in range(300):
        cases += [(f"/call?m=echo&p=e{i}", f"e{i}".encode()),
                  (f"/call?m=async_echo&p=a{i}", f"a{i}".encode()),
                  ("/call?m=sleep&p=5", b"slept")]
    rs = ngx.many([path for path, _ in cases], concurrency=60)
    for (path, want), r in zip(cases, rs):
        assert not isinstance(r, Exception), (path, r)
        assert (r.status, r.body) == (200, want), path
    balanced(ngx, workers=1)


def test_java_logging_reaches_the_error_log(java_nginx):
    ngx = java_nginx()
    assert call(ngx, "log", b"L7").body == b"logged"
    ngx.wait_log(r"\[error\] .*nbffi runtime: it.TestHandler: severe L7")
    ngx.wait_log(r"\[warn\] .*nbffi runtime: it.TestHandler: warning L7")
    ngx.wait_log(r"\[info\] .*nbffi runtime: it.TestHandler: info L7")
    ngx.wait_log(r"\[error\] .*nbffi runtime: it.System: system logger L7")
    ngx.wait_log(r"\[warn\] .*with throwable L7")
    ngx.assert_log(r"java.lang.IllegalArgumentException: logged")
    # below the default level (INFO)
    ngx.assert_no_log(r"fine L7")
    # the runtime announced itself
    ngx.assert_log(r"\[info\] .*nbffi runtime: io.nbffi: started "
                   r"io.nbffi.it.TestHandler")


def test_log_level_from_cfg(java_nginx):
    ngx = java_nginx(cfg="log_level=FINE\n")
    assert call(ngx, "log", b"L8").body == b"logged"
    ngx.wait_log(r"\[debug\] .*nbffi runtime: it.TestHandler: fine L8")


def test_caller_deadline_reaches_the_handler(java_nginx):
    ngx = java_nginx()
    left = int(ngx.get("/call?m=remaining&t=5").text)
    assert 0 < left <= 5_000_000_000


def test_handler_config_args(java_nginx):
    ngx = java_nginx(cfg="arg.greeting=hi there\narg.n = 3\n")
    assert ngx.get("/call?m=config&p=greeting").body == b"hi there"
    assert ngx.get("/call?m=config&p=n").body == b"3"
    assert ngx.get("/call?m=config&p=other").body == b"<unset>"
