"""Streams, events and metadata with the C runtime, in a real nginx.

Streams: chunks relayed as they come, a slow reader whose memory stays
bounded by the window, a caller that times out, breaks out or whose client
goes away mid-stream (the runtime sees the cancellation, every task is
freed), a stream read from a timer, 1,000 streams at once.  Events: a
flood past the bound (drops counted and logged, the worker serves),
handlers that yield, events across reloads.  Metadata: the round trip,
and runtime log lines that carry the request id without the "[lua]"
prefix.
"""

import re
import socket

from harness import Nginx

# /stream?p=PAYLOAD&t=TIMEOUT&w=WINDOW: relays the chunks, then "end" or
# the error.
STREAM = """
location = /stream {
    lua_check_client_abort on;
    content_by_lua_block {
        local rt = require("echo_rt").rt("threads=4")
        local n, bytes = 0, 0
        ngx.log(ngx.NOTICE, "stream-test: streaming")
        local p = ngx.unescape_uri(ngx.var.arg_p)
        for chunk, err in rt:stream("chunks", p, {
            timeout = tonumber(ngx.var.arg_t) or 10,
            window = tonumber(ngx.var.arg_w),
        }) do
            if not chunk then
                ngx.say("error: ", err, " after ", n)
                return
            end
            n = n + 1
            bytes = bytes + #chunk
            if n == 1 then
                ngx.log(ngx.NOTICE, "stream-test: first chunk")
            end
            if ngx.var.arg_echo then
                ngx.print(chunk, "\\n")
                ngx.flush(true)
            end
        end
        ngx.say("end ", n, " ", bytes)
    }
}

location = /stats {
    content_by_lua_block {
        local rt = require("echo_rt").rt("threads=4")
        local want = ngx.var.arg_cancelled
        -- no event tells that the runtime saw the cancellation: poll,
        -- bounded
        for _ = 1, 500 do
            local s = rt:call("stats", "")
            if not want or s:find("cancelled=" .. want, 1, true) then
                break
            end
            ngx.sleep(0.01)
        end
        local h = require("resty.nbffi").host_stats()
        ngx.say(rt:call("stats", ""), " live=", h.tasks_live,
                " waiters=", h.waiters)
    }
}
"""


def stats(ngx, cancelled=None):
    q = f"?cancelled={cancelled}" if cancelled is not None else ""
    text = ngx.request("/stats" + q).text.split()
    return {k: int(v) for k, v in (p.split("=") for p in text)}


def test_stream_relays_chunks_in_order(echo_nginx, balanced):
    ngx = echo_nginx(server=STREAM)
    r = ngx.request("/stream?p=5+3&echo=1")
    assert r.text == "aaa\nbbb\nccc\nddd\neee\nend 5 15\n"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    # a stream with no chunk, and a runtime error at the end
    assert ngx.request("/stream?p=0+3").text == "end 0 0\n"
    assert ngx.request("/stream?p=bad").text == \
        'error: runtime error 2: chunks: "N M [MS]" expected after 0\n'
    s = stats(ngx)
    assert (s["live"], s["waiters"], s["cancelled"]) == (0, 0, 0)
    balanced(ngx, workers=1)


def test_slow_reader_memory_bounded(echo_nginx, balanced):
    # 2,000 chunks of 64 KiB (125 MiB) read slowly through a window of 4:
    # never more than 4 chunks wait in memory, the runtime waits instead.
    ngx = echo_nginx(server="""
    location = /slow-reader {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=4")
            local it, st = rt:stream("chunks", "2000 65536", {window = 4})
            local n, most = 0, 0
            for chunk, err in it, st do
                assert(chunk, err)
                n = n + 1
                local pending, window = st:pending()
                most = math.max(most, pending)
                assert(window == 4 and pending <= window)
                if n % 50 == 0 then
                    ngx.sleep(0.001)        -- the slow part
                end
            end
            ngx.say("read ", n, " most pending ", most)
        }
    }""" + STREAM)
    text = ngx.request("/slow-reader").text
    m = re.fullmatch(r"read 2000 most pending (\d)\n", text)
    assert m and 1 <= int(m.group(1)) <= 4, text
    balanced(ngx, workers=1)


def test_caller_timeout_mid_stream_cancels(echo_nginx, balanced):
    # 100 chunks 30 ms apart, a 0.2 s timeout: some chunks, then timeout;
    # the runtime's next send sees the cancellation.
    ngx = echo_nginx(server=STREAM)
    text = ngx.request("/stream?p=100+10+30&t=0.2").text
    assert re.fullmatch(r"error: timeout after \d+\n", text), text
    s = stats(ngx, cancelled=1)
    assert (s["cancelled"], s["live"], s["waiters"]) == (1, 0, 0), s
    balanced(ngx, workers=1)


def test_break_out_of_the_loop_cancels(echo_nginx, balanced):
    ngx = echo_nginx(server=STREAM + """
    location = /break {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=4")
            local it, st = rt:stream("chunks", "1000 10", {window = 2})
            for chunk in it, st do
                break
            end
            st:close()
            -- a reader that is dropped without close: its finalizer
            for chunk in rt:stream("chunks", "1000 10", {window = 2}) do
                break
            end
            collectgarbage()
            collectgarbage()
            ngx.say("ok")
        }
    }""")
    assert ngx.request("/break").text == "ok\n"
    s = stats(ngx, cancelled=2)
    assert (s["cancelled"], s["live"], s["waiters"]) == (2, 0, 0), s
    balanced(ngx, workers=1)


def test_client_abort_mid_stream_cancels(echo_nginx, balanced):
    ngx = echo_nginx(server=STREAM)
    s = socket.create_connection(("127.0.0.1", ngx.port))
    s.sendall(b"GET /stream?p=1000+10+20 HTTP/1.1\r\nHost: x\r\n\r\n")
    ngx.wait_log("stream-test: first chunk")
    s.close()
    # the sweep gives the killed reader's stream up within a second
    st = stats(ngx, cancelled=1)
    assert (st["cancelled"], st["live"], st["waiters"]) == (1, 0, 0), st
    ngx.wait_log("client prematurely closed connection")
    balanced(ngx, workers=1)


def test_stream_from_a_timer(echo_nginx, balanced):
    ngx = echo_nginx(http="lua_shared_dict results 1m;", server="""
    location = /timer {
        content_by_lua_block {
            local ok = ngx.timer.at(0, function()
                local rt = require("echo_rt").rt("threads=4")
                local n = 0
                for chunk, err in rt:stream("chunks", "50 100") do
                    assert(chunk, err)
                    n = n + 1
                end
                ngx.shared.results:set("timer", n)
            end)
            assert(ok)
            for _ = 1, 1000 do
                local n = ngx.shared.results:get("timer")
                if n then
                    ngx.say("timer read ", n)
                    return
                end
                ngx.sleep(0.005)
            end
            ngx.say("timer did not finish")
        }
    }""")
    assert ngx.request("/timer").text == "timer read 50\n"
    balanced(ngx, workers=1)


def test_thousand_concurrent_streams(echo_nginx, balanced):
    ngx = echo_nginx(log_level="info", server="""
    location = /many {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=4")
            local function one(i)
                local n, bytes = 0, 0
                for chunk, err in rt:stream("chunks", "20 " .. (i % 50),
                                            {window = 2}) do
                    if not chunk then
                        return nil, err
                    end
                    n = n + 1
                    bytes = bytes + #chunk
                end
                return n * 1000 + bytes
            end
            local threads = {}
            for i = 1, 1000 do
                threads[i] = ngx.thread.spawn(one, i)
            end
            local ok_n = 0
            for i = 1, 1000 do
                local ok, v, err = ngx.thread.wait(threads[i])
                if ok and v == 20000 + 20 * (i % 50) then
                    ok_n = ok_n + 1
                else
                    ngx.log(ngx.ERR, "stream ", i, ": ", v, " ", err)
                end
            end
            local h = require("resty.nbffi").host_stats()
            ngx.say(ok_n, " ok, live=", h.tasks_live, " waiters=",
                    h.waiters)
        }
    }""")
    assert ngx.request("/many", timeout=120).text == \
        "1000 ok, live=0 waiters=0\n"
    balanced(ngx, workers=1)


EVENTS = """
location = /emit {
    content_by_lua_block {
        local cfg = ngx.unescape_uri(ngx.var.arg_cfg or "threads=1")
        local rt = require("echo_rt").rt(cfg)
        ngx.say(rt:call("emit", ngx.unescape_uri(ngx.var.arg_p)))
    }
}

location = /events {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local want = tonumber(ngx.var.arg_handled)
        -- handlers run in a timer: wait (bounded) until they did
        for _ = 1, 1000 do
            local s = nbffi.event_stats()
            if not want or s.handled >= want then
                break
            end
            ngx.sleep(0.005)
        end
        local s = nbffi.event_stats()
        ngx.say("emitted=", s.emitted, " delivered=", s.delivered,
                " dropped=", s.dropped, " handled=", s.handled,
                " errors=", s.handler_errors, " sum=",
                ngx.shared.ev:get("sum") or 0, " echoed=",
                ngx.shared.ev:get("echoed") or 0)
    }
}
"""

EVENTS_INIT = """
    local nbffi = require "resty.nbffi"
    assert(nbffi.init())
    nbffi.set_event_limit(tonumber(os.getenv("EV_LIMIT") or 0))
    nbffi.on_event("flood", function(data, name)
        ngx.shared.ev:incr("sum", #data, 0)
    end)
    -- a handler that yields: it calls the runtime
    nbffi.on_event("ask", function(data)
        local rt = require("echo_rt").rt()
        local reply = assert(rt:call("echo", data))
        ngx.shared.ev:incr("echoed", #reply, 0)
    end)
"""


def parse(text):
    return {k: int(v) for k, v in (p.split("=") for p in text.split())}


def test_event_flood_past_the_bound(echo_nginx, balanced):
    ngx = echo_nginx(http="lua_shared_dict ev 1m;", server=EVENTS,
                     init_worker=EVENTS_INIT, env={"EV_LIMIT": "1000"})
    r = parse(ngx.request("/emit?p=100000+10+flood").text)
    assert r["emitted"] + r["dropped"] == 100000
    assert r["dropped"] > 0
    e = parse(ngx.request(f"/events?handled={r['emitted']}").text)
    assert e["emitted"] == r["emitted"] and e["dropped"] == r["dropped"]
    assert e["handled"] == e["emitted"] == e["delivered"]
    assert e["sum"] == 10 * r["emitted"] and e["errors"] == 0
    # drops are logged, not once per event
    lines = ngx.wait_log(r"nbffi: \d+ events dropped")
    assert len(lines) <= 5, lines
    # the worker serves
    assert ngx.request("/emit?p=3+2+ask").text == \
        "emitted=3 dropped=0\n"
    e = parse(ngx.request(f"/events?handled={r['emitted'] + 3}").text)
    assert e["echoed"] == 6
    balanced(ngx, workers=1)


def test_events_during_reload(echo_nginx, balanced):
    # a ticker thread in each worker's runtime emits "tick" every 5 ms;
    # each generation of workers handles its own runtime's events
    ngx = echo_nginx(http="lua_shared_dict ev 1m;", server=EVENTS,
                     init_worker="""
        local nbffi = require "resty.nbffi"
        assert(nbffi.init())
        nbffi.on_event("tick", function(data)
            ngx.shared.ev:incr("ticks", 1, 0)
            ngx.shared.ev:set("last_pid", ngx.worker.pid())
        end)
        require("echo_rt").rt("threads=1 ticker=5")
    """ + """
    """, workers=2)
    ngx.wait_log(r"echo runtime started", count=2)
    for _ in range(2):
        Nginx.wait_gone(ngx.reload(), timeout=20)
    # the new generation's runtimes emit too
    count = ngx.request("/emit?cfg=threads%3D1+ticker%3D5&p=1+1+x").text
    assert count == "emitted=1 dropped=0\n"
    balanced(ngx, workers=6)


META = """
location = /meta {
    content_by_lua_block {
        local rt = require("echo_rt").rt()
        local rid = ngx.var.request_id  -- ngx.var makes a new one per read
        local reply, err = rt:call(ngx.var.arg_m or "meta", "hello", {
            meta = {
                request_id = rid,
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736"
                              .. "-00f067aa0ba902b7-01",
                tenant = 42,
            },
        })
        ngx.print(rid, "\\n", reply or err)
    }
}

location = /meta-errors {
    content_by_lua_block {
        local rt = require("echo_rt").rt()
        local ok, err = pcall(rt.call, rt, "meta", "", {meta = "x"})
        ngx.say(err)
        ok, err = pcall(rt.call, rt, "meta", "", {meta = {[1] = "x"}})
        ngx.say(err)
        ok, err = pcall(rt.call, rt, "meta", "", {meta = {k = "a\\0b"}})
        ngx.say(err)
        local reply
        reply, err = rt:call("meta", "", {meta = {k = ("x"):rep(5000)}})
        ngx.say(reply, " ", err)
        for chunk, e in rt:stream("chunks", "1 1",
                                  {meta = {k = ("x"):rep(5000)}}) do
            ngx.say(chunk, " ", e)
        end
    }
}
"""


def test_meta_round_trip(echo_nginx, balanced):
    ngx = echo_nginx(server=META)
    rid, reply = ngx.request("/meta").text.split("\n", 1)
    assert reply == (f"request_id={rid}\ntenant=42\n"
                     "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736"
                     "-00f067aa0ba902b7-01\n")
    assert ngx.request("/meta-errors").text == (
        "bad option 'meta' to 'call' (table expected, got string)\n"
        "bad option 'meta' to 'call' (keys must be strings of 1..255 bytes"
        " without NUL)\n"
        "bad option 'meta' to 'call' (value of 'k' contains a NUL byte)\n"
        "nil metadata too large: 5003 bytes (the most is 4096)\n"
        "false metadata too large: 5003 bytes (the most is 4096)\n")
    balanced(ngx, workers=1)


def test_runtime_log_lines_carry_the_request_id(echo_nginx, balanced):
    ngx = echo_nginx(server=META)
    rid, reply = ngx.request("/meta?m=tlog").text.split("\n", 1)
    assert reply == "logged"
    line = ngx.wait_log(f"nbffi runtime: hello, request_id: {rid}")[0]
    assert "[notice]" in line and "tenant: 42" in line
    assert "[lua]" not in line and "drain_logs" not in line, line
    # a line logged without a call has no metadata
    ngx.wait_log(r"nbffi runtime: echo runtime started, 1 thread\(s\)"
                 r"(, context: ngx.timer)?$")
    balanced(ngx, workers=1)


def test_lua_readme_blocks(echo_nginx, balanced, echo_env):
    """lua/README.md's stream relay, and its one-worker and fan-out event
    handlers, as written, in two workers."""
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "tests" / "docs"))
    from docblocks import doc_block

    relay = doc_block("lua/README.md", "relay a stream to the client")
    one = doc_block("lua/README.md", "one worker acts for all")
    fan = doc_block("lua/README.md", "fan out to every worker")
    relay = relay.replace("/path/to/nbffi/build/shims/c/libecho.so",
                          echo_env["NBFFI_ECHO_LIB"])
    ngx = echo_nginx(http="lua_shared_dict config 1m;",
                     init_worker=one + "\n" + fan, workers=2,
                     server=EVENTS + """
    location = /relay { content_by_lua_block {
    """ + relay + """
    } }""")
    assert ngx.request("/relay").text == "aaaa\nbbbb\ncccc\n"
    # one event, seen by one worker: it acts, and every worker applies it
    assert ngx.request("/emit?p=1+5+config").text == "emitted=1 dropped=0\n"
    lines = ngx.wait_log(r"config 1 applied: eeeee", count=2)
    pids = {re.search(r"\] (\d+)#", ln).group(1) for ln in lines}
    assert len(pids) == 2, lines
    balanced(ngx, workers=2)
