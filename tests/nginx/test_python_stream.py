"""Streams, events and metadata of the Python shim in a real nginx:
generators (plain and async) read with rt:stream, a slow reader, a caller
that times out or goes away mid-stream, events emitted by handlers and
their threads, metadata read by handlers and carried into log lines.
Handlers: shims/python/tests/handlers/t_stream.py."""

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest

from pyhelp import cfg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from docblocks import doc_block  # noqa: E402

# The Lua side, a module on lua_package_path.
T_STREAM_LUA = r"""
local nbffi = require "resty.nbffi"
local semaphore = require "ngx.semaphore"

local _M = {}
local got = semaphore.new()     -- posted for each event handled
local events = {}               -- name -> { data, ... }

function _M.rt()
    return assert(nbffi.load(os.getenv("NBFFI_PYTHON_LIB"),
                             os.getenv("T_PY_STREAMS")))
end

function _M.init()
    assert(nbffi.init())
    local function on(data, name)
        local list = events[name] or {}
        events[name] = list
        list[#list + 1] = data
        got:post(1)
    end
    assert(nbffi.on_event("tick", on))
    assert(nbffi.on_event("later", on))
    _M.rt()
end

local function meta()
    local id = ngx.var.request_id       -- a new one at each read
    ngx.header["X-Request-Id"] = id
    return { request_id = id, traceparent = "00-abc-def-01" }
end

-- /stream?m=M&p=P[&window=W][&timeout=T][&read=N][&slow=S]: reads the
-- stream (N chunks at most, then closes it; sleeping S s between chunks
-- and checking how far the handler ran ahead); says what it got.
function _M.stream()
    local rt = _M.rt()
    local a = ngx.var
    local m = a.arg_m
    local read, slow = tonumber(a.arg_read), tonumber(a.arg_slow)
    local it, st = rt:stream(m, ngx.unescape_uri(a.arg_p or ""),
                             { window = tonumber(a.arg_window),
                               timeout = tonumber(a.arg_timeout),
                               meta = meta() })
    local n, bytes, ordered, ahead, last, err = 0, 0, true, 0, nil, nil
    for chunk, e in it, st do
        if not chunk then
            err = e
            break
        end
        n = n + 1
        bytes = bytes + #chunk
        last = chunk
        local num = tonumber(chunk:match("^(%d+):"))
        if num and num ~= n - 1 then
            ordered = false
        end
        if slow then
            local sent = tonumber((rt:call("sent_by", m)))
            ahead = math.max(ahead, sent - n)
            ngx.sleep(slow)
        end
        if read and n >= read then
            st:close()
            break
        end
    end
    ngx.say("n=", n, " bytes=", bytes, " ordered=", tostring(ordered),
            " ahead=", ahead, " last=", last and last:sub(1, 16) or "-",
            " err=", err or "-")
end

-- /relay?m=M&p=P: the stream to the client, a flush after each chunk,
-- until the client is gone.
function _M.relay()
    local rt = _M.rt()
    local it, st = rt:stream(ngx.var.arg_m, ngx.var.arg_p or "",
                             { meta = meta(), window = 4 })
    for chunk, err in it, st do
        if not chunk then
            ngx.log(ngx.ERR, "relay: ", err)
            return
        end
        ngx.print(chunk)
        local ok, ferr = ngx.flush(true)
        if not ok then
            ngx.log(ngx.INFO, "relay: client gone: ", ferr)
            st:close()          -- cancels the stream now, not at GC
            return
        end
    end
end

-- /call?m=M&p=P[&t=T]: rt:call with metadata.
function _M.call()
    local reply, err, status = _M.rt():call(ngx.var.arg_m,
                                            ngx.unescape_uri(ngx.var.arg_p
                                                             or ""),
                                            { timeout = tonumber(ngx.var.arg_t),
                                              meta = meta() })
    if not reply then
        ngx.status = 500
        ngx.header["X-Status"] = status
        ngx.print(err)
        return
    end
    ngx.print(reply)
end

-- /events?name=NAME&n=N: waits until N events NAME were handled in all;
-- says how many and whether their numbers came in order.
function _M.events()
    local name, n = ngx.var.arg_name, tonumber(ngx.var.arg_n)
    while #(events[name] or {}) < n do
        assert(got:wait(30))
    end
    local list, ordered = events[name], true
    for i, data in ipairs(list) do
        local num = tonumber(data:match("^(%d+):"))
        if num and num ~= i - 1 then
            ordered = false
        end
    end
    ngx.say("n=", #list, " ordered=", tostring(ordered), " first=",
            list[1]:sub(1, 16), " bytes=", #list[1])
    events[name] = nil
end

function _M.stats()
    local s = nbffi.event_stats()
    ngx.say("emitted=", s.emitted, " delivered=", s.delivered,
            " dropped=", s.dropped)
end

return _M
"""

SERVER = """
location = /stream { content_by_lua_block { require("t_stream").stream() } }
location = /relay { content_by_lua_block { require("t_stream").relay() } }
location = /call { content_by_lua_block { require("t_stream").call() } }
location = /events { content_by_lua_block { require("t_stream").events() } }
location = /stats { content_by_lua_block { require("t_stream").stats() } }
"""


@pytest.fixture
def st_nginx(nginx, nbffi_build, tmp_path):
    lib = nbffi_build / "shims" / "python" / "libnbffi_python.so"
    if not lib.exists():
        if os.environ.get("NBFFI_PYTHON_SUITE"):
            pytest.fail(f"{lib} is missing")
        pytest.skip(f"{lib} is not built (python3-dev missing?)")
    lua = tmp_path / "lua"
    lua.mkdir()
    (lua / "t_stream.lua").write_text(T_STREAM_LUA)
    return nginx(server=SERVER, init_worker='require("t_stream").init()',
                 env={"NBFFI_PYTHON_LIB": str(lib),
                      "T_PY_STREAMS": cfg("t_stream:Streams")},
                 lua_path=[lua / "?.lua"])


def said(r):
    """The k=v pairs of a reply; err=, when there, is last and takes the
    rest of the text."""
    assert r.status == 200, r.text
    text, _, err = r.text.partition(" err=")
    out = dict(kv.split("=", 1) for kv in text.split())
    if _:
        out["err"] = err.rstrip("\n")
    return out


@pytest.mark.parametrize("method, last", [("count", "end"),
                                           ("acount", "199:")])
def test_a_generator_streams_its_chunks_in_order(st_nginx, method, last):
    out = said(st_nginx.get(f"/stream?m={method}&p=200%204096&window=4"))
    n = 201 if method == "count" else 200   # count returns b"end" at last
    assert out["n"] == str(n)
    assert out["ordered"] == "true" and out["err"] == "-"
    assert out["last"].startswith(last)


def test_a_failing_generator_ends_the_stream_with_its_error(st_nginx):
    out = said(st_nginx.get("/stream?m=fails&p=x"))
    assert out["n"] == "1" and out["last"] == "first"
    assert out["err"].startswith("runtime error 1: ValueError: second: x")
    r = st_nginx.get("/call?m=fails&p=x")       # a plain call: joined
    assert r.status == 500 and "ValueError: second: x" in r.text


@pytest.mark.parametrize("method", ["count", "acount"])
def test_a_slow_reader_holds_the_generator_to_the_window(st_nginx, method):
    out = said(st_nginx.get(f"/stream?m={method}&p=30%204096&window=2"
                            f"&slow=0.01"))
    assert out["ordered"] == "true" and out["err"] == "-"
    # the handler never got further ahead than the window and the chunk
    # its send was waiting with
    assert 0 <= int(out["ahead"]) <= 2 + 1


@pytest.mark.parametrize("method", ["endless", "aendless"])
def test_a_reader_that_stops_closes_the_generator(st_nginx, method):
    out = said(st_nginx.get(f"/stream?m={method}&read=5&window=2"))
    assert out["n"] == "5"
    assert st_nginx.get("/call?m=wait_closed&p=1").text == "1"
    rid = st_nginx.get("/call?m=sent_by&p=x").headers["X-Request-Id"]
    assert rid
    st_nginx.wait_log(rf"t_stream: {method} closed, request \w+")


@pytest.mark.parametrize("method", ["endless", "aendless"])
def test_a_caller_timeout_mid_stream_closes_the_generator(st_nginx, method):
    out = said(st_nginx.get(f"/stream?m={method}&window=2&timeout=0.3"
                            f"&slow=0.02"))
    assert out["err"] == "timeout" and int(out["n"]) >= 1
    assert st_nginx.get("/call?m=wait_closed&p=1").text == "1"


@pytest.mark.parametrize("method", ["endless", "aendless"])
def test_a_client_abort_mid_stream_closes_the_generator(st_nginx, method):
    s = socket.create_connection(("127.0.0.1", st_nginx.port), timeout=30)
    s.sendall(f"GET /relay?m={method} HTTP/1.1\r\nHost: x\r\n\r\n"
              .encode())
    got = b""
    while len(got) < 16384:
        got += s.recv(65536)
    # close with unread data: the kernel sends RST, the next flush fails
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert st_nginx.get("/call?m=wait_closed&p=1").text == "1"
    st_nginx.wait_log(r"relay: client gone")


def test_an_async_handler_whose_caller_timed_out_is_cancelled(st_nginx):
    r = st_nginx.get("/call?m=hold&t=0.2")
    assert r.status == 500 and r.text == "timeout"
    assert st_nginx.get("/call?m=wait_closed&p=1").text == "1"
    st_nginx.wait_log(r"t_stream: hold closed, request \w+")


def test_metadata_round_trip_and_log_lines(st_nginx):
    r = st_nginx.get("/call?m=meta&p=sync&t=5")
    got = json.loads(r.body)
    rid = r.headers["X-Request-Id"]
    assert got["meta"] == {"request_id": rid, "traceparent": "00-abc-def-01"}
    assert got["method"] == "meta" and not got["streaming"]
    assert 0 < got["deadline_left"] <= 5 and got["cancelled"] is False
    # the line the handler logged carries the request id, without the
    # [lua] prefix of the Lua code that wrote it
    line = st_nginx.wait_log(r"t_stream: meta call sync")[0]
    assert f"request_id: {rid}" in line
    assert "traceparent: 00-abc-def-01" in line
    assert "[lua]" not in line
    r = st_nginx.get("/call?m=ameta&p=async")
    assert json.loads(r.body)["request_id"] == r.headers["X-Request-Id"]
    line = st_nginx.wait_log(r"t_stream: async meta call async")[0]
    assert f"request_id: {r.headers['X-Request-Id']}" in line
    assert re.search(r"\[warn\]", line)


@pytest.mark.parametrize("size", [10, 10240])
def test_events_reach_lua_handlers_in_order(st_nginx, size):
    r = st_nginx.get(f"/call?m=emit&p=tick%20500%20{size}")
    assert r.text == "500"
    out = said(st_nginx.get("/events?name=tick&n=500"))
    assert out == {"n": "500", "ordered": "true",
                   "first": ("0:" + "." * 14)[:min(16, size)],
                   "bytes": str(size)}


def test_an_event_from_a_handlers_thread(st_nginx):
    assert st_nginx.get("/call?m=emit_later&p=later%20hello").text == \
        "started"
    out = said(st_nginx.get("/events?name=later&n=1"))
    assert out["n"] == "1" and out["first"] == "hello"
    stats = said(st_nginx.get("/stats"))
    assert int(stats["emitted"]) >= 1 and stats["dropped"] == "0"


DOC_INIT = """
    local nbffi = require "resty.nbffi"
    assert(nbffi.init())
    TOKENS = assert(nbffi.load(os.getenv("NBFFI_PYTHON_LIB"),
        '{"handler": "tokens:Tokens", "path": ["' .. os.getenv("APP")
        .. '"]}'))
"""


def test_the_docs_stream_event_and_metadata(nginx, nbffi_build, tmp_path):
    """docs/runtime-python.md, section 4: its handler, its event handler
    and its relay, in nginx."""
    lib = nbffi_build / "shims" / "python" / "libnbffi_python.so"
    if not lib.exists():
        pytest.fail(f"{lib} is missing")
    app = tmp_path / "app"
    app.mkdir()
    (app / "tokens.py").write_text(doc_block("runtime-python.md",
                                             "tokens.py"))
    on_event = doc_block("runtime-python.md", "init_worker_by_lua_block, after")
    relay = doc_block("runtime-python.md", "content_by_lua_block: relay")
    ngx = nginx(http="lua_shared_dict tokens 1m;",
                init_worker=DOC_INIT + on_event,
                env={"NBFFI_PYTHON_LIB": str(lib), "APP": str(app)},
                server="""
    location = /relay { content_by_lua_block { %s } }
    location = /words {
        content_by_lua_block {
            local out = {}
            for chunk, err in TOKENS:stream("words", "x y") do
                out[#out + 1] = chunk or err
            end
            ngx.print(table.concat(out, "|"))
        }
    }
    location = /reload {
        content_by_lua_block {
            ngx.say(TOKENS:call("reload", "7"))
            for _ = 1, 3000 do           -- the event comes in a timer
                local v = ngx.shared.tokens:get("version")
                if v then
                    ngx.say(v)
                    return
                end
                ngx.sleep(0.01)
            end
        }
    }
""" % relay)
    r = ngx.get("/relay")
    assert r.status == 200 and r.text == "A acme\nB acme\nC acme\n"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    line = ngx.wait_log(r"tokens: streaming 3 words")[0]
    assert re.search(r"request_id: \w+, tenant: acme", line)
    ngx.wait_log(r"tokens: stream over, caller gone: False, request_id")
    assert ngx.get("/words").text == "x\n|y\n|done\n"
    assert ngx.get("/reload").text == "reloading\nversion 7\n"
