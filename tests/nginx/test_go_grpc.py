"""The Go gRPC example through real nginx: Lua -> nbffi -> Go -> gRPC."""

import json
import signal
import threading

from gohelp import greeter, greeter_bin, grpc_lib, grpc_nginx  # noqa: F401
from harness import free_port


def get_json(ngx, path):
    r = ngx.get(path)
    assert r.headers.get("Content-Type") == "application/json", r
    return r.status, json.loads(r.body)


def test_unary_call(greeter, grpc_nginx):
    ngx = grpc_nginx(greeter().addr)
    assert get_json(ngx, "/hello?name=nginx") == \
        (200, {"message": "Hello, nginx"})


def test_server_streaming_call(greeter, grpc_nginx):
    ngx = grpc_nginx(greeter().addr)
    status, body = get_json(ngx, "/hellos?name=lua&count=3")
    assert status == 200
    assert body == {"replies": [{"message": f"Hello #{i}, lua"}
                                for i in (1, 2, 3)]}
    assert get_json(ngx, "/hellos?name=lua&count=0") == \
        (200, {"replies": []})


def test_invalid_argument(greeter, grpc_nginx):
    ngx = grpc_nginx(greeter().addr)
    status, body = get_json(ngx, "/hello?name=")
    assert (status, body["grpc_code"]) == (400, 3)
    assert body["error"] == "runtime error 103: InvalidArgument: name is empty"


def test_unavailable(grpc_nginx):
    ngx = grpc_nginx(f"127.0.0.1:{free_port()}")
    status, body = get_json(ngx, "/hello?name=x")
    assert (status, body["grpc_code"]) == (503, 14)
    assert body["error"].startswith("runtime error 114: Unavailable: ")


def test_deadline_exceeded(greeter, grpc_nginx):
    # The server answers after 5 s; the call allows 1 s.  The gRPC deadline
    # comes first, so Lua gets the gRPC error rather than its own timeout.
    ngx = grpc_nginx(greeter().addr)
    status, body = get_json(ngx, "/hello?name=x&delay_ms=5000&timeout=1")
    assert (status, body["grpc_code"]) == (504, 4)
    assert body["error"].startswith("runtime error 104: DeadlineExceeded")
    # the same connection still serves
    assert get_json(ngx, "/hello?name=y") == (200, {"message": "Hello, y"})


def test_many_concurrent_calls(greeter, grpc_nginx, balanced):
    ngx = grpc_nginx(greeter().addr)
    paths = [f"/hello?name=n{i}&delay_ms=20" for i in range(300)]
    for i, r in enumerate(ngx.many(paths, concurrency=100)):
        assert not isinstance(r, Exception), r
        assert (r.status, json.loads(r.body)) == \
            (200, {"message": f"Hello, n{i}"})
    # every task freed when the worker exits (and the runtime with it)
    balanced(ngx, workers=1)


TWO = """
location = /two {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local out = {}
        for _, target in ipairs({ngx.var.arg_a, ngx.var.arg_b}) do
            local rt = assert(nbffi.load("%s",
                                         '{"target":"' .. target .. '"}'))
            out[#out + 1] = assert(rt:call("SayHello", '{"name":"two"}'))
        end
        ngx.print("[", table.concat(out, ","), "]")
    }
}
"""


def test_runtimes_with_own_connections(greeter, grpc_nginx, grpc_lib):
    # One Go library, three runtimes (the example's and two more) in one
    # worker, each with its own cfg and gRPC connection.
    a, b = greeter("Hi"), greeter("Howdy")
    ngx = grpc_nginx(greeter().addr, server=TWO % grpc_lib)
    r = ngx.get(f"/two?a={a.addr}&b={b.addr}")
    assert r.status == 200, r.text
    assert json.loads(r.body) == [{"message": "Hi, two"},
                                  {"message": "Howdy, two"}]
    assert get_json(ngx, "/hello?name=x") == (200, {"message": "Hello, x"})


BAD_CFG = """
location = /load {
    content_by_lua_block {
        local rt, err = require("resty.nbffi").load("%s", ngx.var.arg_cfg)
        ngx.say(rt and "loaded" or err)
    }
}
"""


def test_bad_cfg_is_a_clear_load_error(greeter, grpc_nginx, grpc_lib):
    ngx = grpc_nginx(greeter().addr, server=BAD_CFG % grpc_lib)
    r = ngx.get("/load?cfg={}")
    assert r.text.endswith('init failed: cfg: "target" is missing\n'), r.text
    r = ngx.get("/load?cfg=nonsense")
    assert "init failed: cfg: invalid character" in r.text, r.text
    # the worker keeps serving
    assert get_json(ngx, "/hello?name=x") == (200, {"message": "Hello, x"})


ARRIVED = """
access_by_lua_block { ngx.log(ngx.NOTICE, "arrived: ", ngx.var.request_uri) }
"""


def test_quit_with_a_call_in_flight(greeter, grpc_nginx, balanced):
    # The call finishes before the worker closes the Go runtime, whose
    # fini then finds no handler running: nothing is orphaned or leaked.
    # A notice of our own: the request line is logged at debug level only,
    # which an nginx built without --with-debug (OpenResty's) never writes.
    ngx = grpc_nginx(greeter().addr, server=ARRIVED)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=ngx.request("/hello?name=late&delay_ms=500")))
    t.start()
    ngx.wait_log(r"arrived: /hello\?name=late")
    ngx.proc.send_signal(signal.SIGQUIT)
    t.join()
    assert (result["r"].status, json.loads(result["r"].body)) == \
        (200, {"message": "Hello, late"})
    balanced(ngx, workers=1)
