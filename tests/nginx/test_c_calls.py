"""Calls to the C reference runtime from every place that may yield."""

import os

import pytest

# /call?m=METHOD&spin=US: calls METHOD with the request body (or ?p=).
CALL = """
location = /call {
    client_max_body_size 4m;
    client_body_buffer_size 4m;
    content_by_lua_block {
        ngx.req.read_body()
        local rt = require("echo_rt").rt()
        local payload = ngx.req.get_body_data() or ngx.var.arg_p or ""
        local opts = { spin = tonumber(ngx.var.arg_spin) }
        local reply, err = rt:call(ngx.var.arg_m or "echo", payload, opts)
        if not reply then
            ngx.status = 500
            ngx.say(err)
            return
        end
        ngx.print(reply)
    }
}
location = /host {
    content_by_lua_block {
        local s = require("resty.nbffi").host_stats()
        ngx.say("live=", s.tasks_live, " waiters=", s.waiters)
    }
}
"""


# borrow_min: every payload copied, or every payload lent
@pytest.mark.parametrize("borrow_min", ["math.huge", "0"],
                         ids=["copied", "lent"])
@pytest.mark.parametrize("spin", [None, 0], ids=["spin", "nospin"])
def test_echo_round_trip(echo_nginx, balanced, spin, borrow_min):
    ngx = echo_nginx(server=CALL, init_worker=f"""
        assert(require("resty.nbffi").init())
        require("echo_rt").rt("threads=1", {{ borrow_min = {borrow_min} }})
    """)
    q = "" if spin is None else f"&spin={spin}"
    payloads = [b"", b"hello", b"\0", b"a\0b\0\0c\0", bytes(range(256)) * 4,
                os.urandom(100_000), os.urandom(1 << 20)]
    for p in payloads:
        r = ngx.request("/call?m=echo" + q, "POST", body=p)
        assert (r.status, len(r.body)) == (200, len(p))
        assert r.body == p
    r = ngx.request("/call?m=upper" + q, "POST", body=b"mixed\0Case")
    assert (r.status, r.body) == (200, b"MIXED\0CASE")
    r = ngx.request("/call?m=upper" + q, "POST", body=b"x" * (1 << 20))
    assert r.body == b"X" * (1 << 20)
    assert ngx.request("/host").text == "live=0 waiters=0\n"
    balanced(ngx, workers=1)


def test_method_sugar(echo_nginx):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt()
            ngx.say(rt:echo("a"), " ", rt:upper("b", 5), " ",
                    rt:upper("c", { timeout = 5, spin = 0 }))
        }
    }""")
    assert ngx.request("/t").text == "a B C\n"


def test_1000_light_threads_in_one_request(echo_nginx, balanced):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local rt = require("echo_rt").rt()
            local threads = {}
            for i = 1, 1000 do
                threads[i] = ngx.thread.spawn(function()
                    -- no spin: every call yields, all 1000 wait at once
                    return rt:call("echo", "p" .. i, { spin = 0 })
                end)
            end
            local waiting = nbffi.host_stats().waiters
            local bad = 0
            for i = 1, 1000 do
                local ok, reply = ngx.thread.wait(threads[i])
                if not ok or reply ~= "p" .. i then
                    bad = bad + 1
                end
            end
            local s = rt:stats()
            ngx.say("waiting=", waiting, " bad=", bad, " completed=",
                    s.completed, " in_flight=", s.in_flight,
                    " waiters=", nbffi.host_stats().waiters)
        }
    }""")
    assert ngx.request("/t").text == \
        "waiting=1000 bad=0 completed=1000 in_flight=0 waiters=0\n"
    balanced(ngx, workers=1)


def test_many_concurrent_requests(echo_nginx, balanced):
    ngx = echo_nginx(server=CALL, log_level="info")
    paths = [f"/call?m=echo&p=req{i}" + ("&spin=0" if i % 2 else "")
             for i in range(600)]
    results = ngx.many(paths, concurrency=100)
    bad = [(p, r) for p, r in zip(paths, results)
           if not (getattr(r, "status", None) == 200
                   and r.body == p.split("p=")[1].split("&")[0].encode())]
    assert bad == []
    balanced(ngx, workers=1)


@pytest.mark.parametrize("spin", ["nil", "0"], ids=["spin", "nospin"])
def test_rewrite_access_content_timer_coroutine(echo_nginx, spin):
    opts = "{ spin = %s }" % spin
    ngx = echo_nginx(server="""
    location = /t {
        rewrite_by_lua_block {
            ngx.ctx.r = require("echo_rt").rt():call("upper", "rewrite", OPTS)
        }
        access_by_lua_block {
            ngx.ctx.a = require("echo_rt").rt():call("upper", "access", OPTS)
        }
        content_by_lua_block {
            local rt = require("echo_rt").rt()
            local sema = require("ngx.semaphore").new()
            local from_timer
            assert(ngx.timer.at(0, function()
                from_timer = rt:call("upper", "timer", OPTS)
                sema:post()
            end))
            assert(sema:wait(10))
            local co = coroutine.wrap(function()
                return rt:call("upper", "coroutine", OPTS)
            end)
            local t = ngx.thread.spawn(rt.call, rt, "upper", "thread", OPTS)
            local _, from_thread = ngx.thread.wait(t)
            ngx.say(ngx.ctx.r, " ", ngx.ctx.a, " ",
                    rt:call("upper", "content", OPTS), " ", from_timer, " ",
                    co(), " ", from_thread)
        }
    }""".replace("OPTS", opts))
    assert ngx.request("/t").text == \
        "REWRITE ACCESS CONTENT TIMER COROUTINE THREAD\n"


def test_first_load_in_a_handler(echo_nginx):
    # Without nbffi.init() the first load makes the host and starts the
    # dispatcher in a timer; the load yields until the runtime is ready,
    # which lets the dispatcher start: the call is delivered by it.
    ngx = echo_nginx(init_worker="", server="""
    location = /t {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local rt = require("echo_rt").rt()
            local state = rt:state()
            local reply, err = rt:call("echo", "early", { spin = 0 })
            ngx.say(state, " ", reply, " ",
                    tostring(nbffi.host_stats().dispatching))
        }
    }""")
    assert ngx.request("/t").text == "ready early true\n"


def test_runtime_log_reaches_error_log(echo_nginx):
    ngx = echo_nginx(server=CALL)
    r = ngx.request("/call?m=log", "POST", body=b"hello from the runtime")
    assert r.text == "logged"
    ngx.wait_log(r"\[notice\].*nbffi runtime: hello from the runtime")
    ngx.assert_log(r"\[info\].*nbffi runtime: echo runtime started")


def test_hot_path_is_compiled_without_nyi(echo_nginx):
    ngx = echo_nginx(server="""
    location = /t {
        content_by_lua_block {
            local jutil = require "jit.util"
            local vmdef = require "jit.vmdef"
            local rt = require("echo_rt").rt()
            local nyi, traced = {}, false
            local function on_trace(what, tr, func, pc, otr, oex)
                local src = jutil.funcinfo(func, pc).source or ""
                if not src:find("resty/nbffi", 1, true) then
                    return
                end
                if what == "stop" then
                    traced = true
                elseif what == "abort" then
                    local msg = vmdef.traceerr[otr] or ""
                    if msg:find("NYI", 1, true) then
                        nyi[#nyi + 1] = msg:format(oex) .. " at "
                            .. src .. ":" .. jutil.funcinfo(func, pc)
                                                .currentline
                    end
                end
            end
            jit.attach(on_trace, "trace")
            for _ = 1, 20000 do
                rt:call("echo", "hot")
            end
            jit.attach(on_trace)
            ngx.say("traced=", traced, " nyi=", table.concat(nyi, "; "))
        }
    }""")
    assert ngx.request("/t").text == "traced=true nyi=\n"


def runtime_threads_voluntary_switches(pid):
    """Voluntary context switches of every thread of pid but its main one:
    a thread that sleeps for work makes one each time."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if tid == str(pid):
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass            # a thread that left meanwhile
    return total


# runtime_spin bounds the runtime thread's spin in nbffi_queue_pop: at 0 it
# sleeps whenever its queue is empty, so each of N sequential calls (the
# caller yields: spin = 0) wakes it; at 1 s its adaptive spin soon covers
# the gaps between the calls and it hardly sleeps at all.
@pytest.mark.parametrize("runtime_spin", [0, 1e6], ids=["0", "1s"])
def test_runtime_spin_bounds_the_runtime_threads_spin(echo_nginx, balanced,
                                                      runtime_spin):
    n = 200
    ngx = echo_nginx(server=f"""
    location = /pid {{
        content_by_lua_block {{
            require("echo_rt").rt("threads=1",
                                  {{ runtime_spin = {runtime_spin} }})
            ngx.print(ngx.worker.pid())
        }}
    }}
    location = /seq {{
        content_by_lua_block {{
            local rt = require("echo_rt").rt("threads=1")
            local ok = 0
            for i = 1, {n} do
                if rt:call("echo", "s" .. i, {{ spin = 0 }}) == "s" .. i then
                    ok = ok + 1
                end
            end
            ngx.print(ok)
        }}
    }}""")
    pid = int(ngx.request("/pid").text)
    assert ngx.request("/seq").text == str(n)       # warm: the spin adapts
    before = runtime_threads_voluntary_switches(pid)
    assert ngx.request("/seq").text == str(n)
    slept = runtime_threads_voluntary_switches(pid) - before
    if runtime_spin == 0:
        assert slept >= n // 2, slept
    else:
        assert slept < n // 2, slept
    balanced(ngx, workers=1)
