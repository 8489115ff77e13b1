"""Bad input, refused calls and closed runtimes (DESIGN invariant 5): each
gets a clear error and the worker keeps serving."""

import re

PID = """
location = /pid {
    content_by_lua_block { ngx.say(ngx.worker.pid()) }
}
"""


def lines(text):
    """'name: rest' lines -> {name: rest}."""
    return dict(ln.split(": ", 1) for ln in text.splitlines())


def test_bad_inputs_get_clear_errors(echo_nginx, balanced):
    ngx = echo_nginx(server=PID + r"""
    location = /t {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local echo = os.getenv("NBFFI_ECHO_LIB")
            local function show(name, a, b)
                ngx.say(name, ": ", tostring(a), " | ", tostring(b))
            end
            show("missing path", nbffi.load("/nonexistent/libnope.so"))
            show("missing name", nbffi.load("nbffi_no_such_runtime"))
            show("empty name", nbffi.load(""))
            -- C would load "libc.so.6" if it saw only the part before NUL
            show("nul in name", nbffi.load("libc.so.6\0x"))
            show("nul in search path", nbffi.load("x", nil,
                                                  { search_path = "/\0" }))
            show("not a runtime", nbffi.load("libc.so.6"))
            show("failing init", nbffi.load(echo, "fail=boom"))
            show("bad cfg", nbffi.load(echo, "threads=99"))
            local rt = require("echo_rt").rt()
            show("table payload", rt:call("echo", {}))
            show("nil payload", rt:call("echo"))
            show("number payload", rt:call("echo", 42))
            show("number method", rt:call(42, "x"))
            show("empty method", rt:call("", "x"))
            show("long method", rt:call(string.rep("m", 256), "x"))
            show("nul method", rt:call("ec\0ho", "x"))
            show("max method", rt:call(string.rep("m", 255), "x"))
            -- (lib, cfg) names a runtime: another cfg string, another one
            local small = assert(nbffi.load(echo, "threads=1 ",
                                            { max_payload = 10 }))
            show("oversize", small:call("echo", "12345678901"))
            show("max size", small:call("echo", "1234567890"))
            small:close()
            show("closed", small:call("echo", "x"))
            show("closed stats", small:stats().posted)
            show("raise call", pcall(rt.call, nil, "echo", "x"))
            show("raise load", pcall(nbffi.load, 42))
            show("raise cfg", pcall(nbffi.load, echo, {}))
            show("raise opts", pcall(nbffi.load, echo, "", { max_queue = "x" }))
            show("raise queue", pcall(nbffi.load, echo, "", { max_queue = 1.5 }))
            show("raise borrow", pcall(nbffi.load, echo, "",
                                       { borrow_min = -1 }))
            show("raise sched", pcall(nbffi.load, echo, "",
                                      { sched = "fifo" }))
            show("raise runtime_spin", pcall(nbffi.load, echo, "",
                                             { runtime_spin = -1 }))
            show("raise timeout", pcall(rt.call, rt, "echo", "x", -1))
            show("raise nan timeout", pcall(rt.call, rt, "echo", "x", 0/0))
            show("huge timeout", rt:call("echo", "far", 1e300))
            show("raise call opts", pcall(rt.call, rt, "echo", "x", "fast"))
            show("still serving", rt:call("echo", "yes"))
        }
    }""")
    pid = ngx.request("/pid").text
    got = lines(ngx.request("/t").text)
    want = {
        "missing path": r"nil \| cannot load runtime library: "
                        r"/nonexistent/libnope.so: cannot open",
        "missing name": r"nil \| cannot load runtime library: "
                        r"nbffi_no_such_runtime: not found",
        "empty name": r"nil \| cannot load runtime library: empty name",
        "nul in name": r"nil \| cannot load runtime library: name contains "
                       r"a NUL byte",
        "nul in search path": r"nil \| cannot load runtime library: "
                              r"search_path contains a NUL byte",
        "not a runtime": r"nil \| runtime library lacks an entry point: "
                         r"libc.so.6: no nbffi_runtime_abi",
        "failing init": r"nil \| runtime init failed: .*init failed: boom$",
        "bad cfg": r"nil \| runtime init failed: .*threads must be 1..16",
        "table payload": r"nil \| payload must be a string, got table",
        "nil payload": r"nil \| payload must be a string, got nil",
        "number payload": r"nil \| payload must be a string, got number",
        "number method": r"nil \| method must be a string, got number",
        "empty method": r"nil \| invalid method name",
        "long method": r"nil \| invalid method name",
        "nul method": r"nil \| invalid method name",
        "max method": r"nil \| runtime error 2: unknown method",
        "oversize": r"nil \| payload too large: 11 bytes \(max_payload is "
                    r"10\)",
        "max size": r"1234567890 \| nil",
        "closed": r"nil \| closed",
        "closed stats": r"1 \| nil",     # posted: only "max size"
        "raise call": r"false \| .*bad argument #1 to 'call' \(runtime "
                      r"expected",
        "raise load": r"false \| .*bad argument #1 to 'load' \(string "
                      r"expected, got number\)",
        "raise cfg": r"false \| .*bad argument #2 to 'load'",
        "raise opts": r"false \| .*bad option 'max_queue' to 'load' "
                      r"\(number expected, got string\)",
        "raise queue": r"false \| .*bad option 'max_queue' to 'load'",
        "raise borrow": r"false \| .*bad option 'borrow_min' to 'load'",
        "raise sched": r"false \| .*bad option 'sched' to 'load' "
                       r"\(\"batch\" or \"normal\" expected\)",
        "raise runtime_spin": r"false \| .*bad option 'runtime_spin' to "
                              r"'load' \(microseconds >= 0 expected\)",
        "raise timeout": r"false \| .*bad timeout to 'call'",
        "raise nan timeout": r"false \| .*bad timeout to 'call'",
        "huge timeout": r"far \| nil",
        "raise call opts": r"false \| .*bad argument #3 to 'call'",
        "still serving": r"yes \| nil",
    }
    assert set(got) == set(want)
    for name, rx in want.items():
        assert re.match(rx, got[name]), (name, got[name])
    assert ngx.request("/pid").text == pid
    balanced(ngx, workers=1)


def test_full_queue_is_an_immediate_error(echo_nginx, balanced):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=1", { max_queue = 2 })
            local function call(m, p)
                return ngx.thread.spawn(rt.call, rt, m, p, { spin = 0 })
            end
            local busy = call("sleep", "1000")
            -- no event tells that the runtime's only thread took the
            -- sleep: poll the queue, bounded
            for _ = 1, 1000 do
                if rt:stats().queued == 0 then
                    break
                end
                ngx.sleep(0.001)
            end
            local a, b = call("echo", "a"), call("echo", "b")
            local reply, err = rt:call("echo", "c")
            local s = rt:stats()
            ngx.say(tostring(reply), " ", err, " queued=", s.queued,
                    " refused=", s.refused)
            for _, t in ipairs({ busy, a, b }) do
                local _, r = ngx.thread.wait(t)
                ngx.say(r)
            end
        }
    }""")
    assert ngx.request("/t").text == \
        "nil queue full queued=2 refused=1\nslept\na\nb\n"
    balanced(ngx, workers=1)


def test_runtime_error_status(echo_nginx):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt()
            local function show(a, b, c)
                ngx.say(tostring(a), " | ", b, " | ", c)
            end
            show(rt:call("error", "boom"))
            show(rt:call("error", "with\\0nul"))
            show(rt:call("no_such_method", "x"))
            local s = rt:stats()
            ngx.say("failed=", s.failed, " completed=", s.completed)
        }
    }""")
    assert ngx.request("/t").body == (
        b"nil | runtime error 1: boom | 1\n"
        b"nil | runtime error 1: with\0nul | 1\n"
        b"nil | runtime error 2: unknown method | 2\n"
        b"failed=3 completed=0\n")


def test_close_while_calls_are_pending(echo_nginx, balanced):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=2")
            local threads = {}
            for i = 1, 20 do
                threads[i] = ngx.thread.spawn(rt.call, rt, "hold", "h",
                                              { spin = 0 })
            end
            assert(rt:close())
            assert(rt:close())      -- idempotent
            local out = {}
            for i = 1, 20 do
                local _, reply, err = ngx.thread.wait(threads[i])
                out[reply or err] = (out[reply or err] or 0) + 1
            end
            for k, n in pairs(out) do
                ngx.say(k, "=", n)
            end
            ngx.say("after close: ", select(2, rt:call("echo", "x")))
            local again = require("echo_rt").rt("threads=2")
            ngx.say("reloaded: ", again ~= rt, " ", again:call("echo", "x"))
        }
    }""")
    assert ngx.request("/t").text == \
        "released=20\nafter close: closed\nreloaded: true x\n"
    balanced(ngx, workers=1)


def test_close_with_an_absurd_timeout(echo_nginx, balanced):
    """1e300 s is no deadline in practice, not an overflow: the close runs
    as any other (a wrapped negative deadline once made its waits spin)."""
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt("threads=1")
            local t = ngx.thread.spawn(rt.call, rt, "hold", "h")
            assert(rt:close(1e300))
            ngx.say(select(2, ngx.thread.wait(t)))
        }
    }""")
    assert ngx.request("/t").text == "released\n"
    balanced(ngx, workers=1)


def test_load_is_idempotent_per_lib_and_cfg(echo_nginx):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local echo = require "echo_rt"
            ngx.say(echo.rt() == echo.rt(), " ",
                    echo.rt("threads=1") ~= echo.rt("threads=2"))
        }
    }""")
    assert ngx.request("/t").text == "true true\n"


NOT_YIELDABLE = "cannot call a runtime in the {} phase: it cannot yield"


def test_phases_that_cannot_yield(echo_nginx):
    # init_worker, set, header_filter, body_filter, log and balancer: each
    # logs what its call returned.
    log = 'ngx.log(ngx.WARN, "phase-check ", ngx.get_phase(), ": ", ' \
          'tostring(r), " | ", err)'
    call = 'local r, err = require("echo_rt").rt():call("echo", "x")'
    ngx = echo_nginx(
        init_worker=f'assert(require("resty.nbffi").init())\n{call}\n{log}',
        http=f"""
    upstream via_balancer {{
        server 127.0.0.1:1;
        balancer_by_lua_block {{
            {call}
            {log}
            local b = require "ngx.balancer"
            assert(b.set_current_peer("127.0.0.1",
                                      tonumber(ngx.var.server_port)))
        }}
    }}""", server=f"""
    location = /t {{
        set_by_lua_block $set_result {{
            {call}
            return tostring(r) .. " | " .. err
        }}
        header_filter_by_lua_block {{ {call} {log} }}
        body_filter_by_lua_block {{
            if ngx.arg[2] then {call} {log} end
        }}
        log_by_lua_block {{ {call} {log} }}
        content_by_lua_block {{ ngx.say("set: ", ngx.var.set_result) }}
    }}
    location = /b {{ proxy_pass http://via_balancer/plain; }}
    location = /plain {{ return 200 "plain\\n"; }}""")
    assert ngx.request("/t").text == \
        "set: nil | " + NOT_YIELDABLE.format("set") + \
        " (call from rewrite, access, content or an ngx.timer)\n"
    assert ngx.request("/b").text == "plain\n"
    for phase in ["init_worker", "header_filter", "body_filter", "log",
                  "balancer"]:
        ngx.wait_log(rf"phase-check {phase}: nil \| "
                     + re.escape(NOT_YIELDABLE.format(phase)))


def test_master_refuses_to_load(echo_nginx):
    ngx = echo_nginx(init="""
        local nbffi = require "resty.nbffi"
        local rt, err = nbffi.load(os.getenv("NBFFI_ECHO_LIB"))
        local ok, err2 = nbffi.init()
        package.loaded.master_result = tostring(rt) .. " | " .. err
                                       .. " | " .. tostring(ok) .. " | " .. err2
    """, server="""
    location = /t {
        content_by_lua_block {
            ngx.say(package.loaded.master_result)
            ngx.say(require("echo_rt").rt():call("echo", "worker ok"))
        }
    }""")
    text = ngx.request("/t").text
    refusal = ("not allowed in init_by_lua* (the master process): runtime "
               "threads do not survive fork; use init_worker_by_lua* or "
               "later")
    assert text == (f"nil | nbffi.load: {refusal} | nil | {refusal}\n"
                    "worker ok\n")
