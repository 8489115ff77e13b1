"""Callers that stop waiting: timeout, client abort, a killed light thread.

Each test proves invariant 2: the late reply is reaped and freed (the
worker's exit line shows allocated == freed, live == 0), and the worker
keeps serving.  The runtime has one thread, so a call queued after a slow
one is answered after it: once that call returns, the slow completion has
been reaped too.
"""

import socket

import pytest

# /after: a call queued behind the slow one, then the host counters.
AFTER = """
location = /after {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = require("echo_rt").rt()
        local reply, err = rt:call("echo", "after", 10)
        local h, s = nbffi.host_stats(), rt:stats()
        ngx.say(reply or err, " live=", h.tasks_live, " waiters=", h.waiters,
                " completed=", s.completed, " timed_out=", s.timed_out,
                " abandoned=", s.abandoned, " in_flight=", s.in_flight)
    }
}
"""

# /slow?m=METHOD&p=PAYLOAD&t=TIMEOUT with lua_check_client_abort on.
SLOW = """
location = /slow {
    lua_check_client_abort on;
    content_by_lua_block {
        local rt = require("echo_rt").rt()
        local payload = ngx.var.arg_p
        ngx.log(ngx.NOTICE, "slow-call: calling")
        local reply, err = rt:call(ngx.var.arg_m, payload,
                                   tonumber(ngx.var.arg_t))
        ngx.log(ngx.NOTICE, "slow-call: returned ", reply, " ", err)
        ngx.say(reply or err)
    }
}
"""


# A copied payload's task is released at the timeout (cancelled; counted
# timed out).  A lent payload must outlive the runtime's use of it, so its
# task stays held until the late reply is reaped (counted completed).
@pytest.mark.parametrize("borrow_min,counts", [
    ("math.huge", "completed=1 timed_out=1 abandoned=0"),
    ("0", "completed=2 timed_out=0 abandoned=0"),
], ids=["copied", "lent"])
def test_timeout_then_late_reply_is_freed(echo_nginx, balanced, borrow_min,
                                          counts):
    ngx = echo_nginx(server=SLOW + AFTER, init_worker=f"""
        assert(require("resty.nbffi").init())
        require("echo_rt").rt("threads=1", {{ borrow_min = {borrow_min} }})
    """)
    r = ngx.request("/slow?m=sleep&p=300&t=0.05")
    assert r.text == "timeout\n"
    # The sleep completes ~250 ms later; the echo queued behind it returns
    # only after that completion was reaped.
    assert ngx.request("/after").text == \
        f"after live=0 waiters=0 {counts} in_flight=0\n"
    balanced(ngx, workers=1)


def counters(text):
    """'after k=v k=v ...' -> {k: int(v)}"""
    reply, *pairs = text.split()
    assert reply == "after"
    return {k: int(v) for k, v in (p.split("=") for p in pairs)}


def assert_killed_caller_freed(ngx):
    # The killed caller's task was freed either way: given up by the sweep
    # (abandoned) if it ran before the reply, else reaped (completed).
    c = counters(ngx.request("/after").text)
    assert (c["live"], c["waiters"], c["in_flight"]) == (0, 0, 0)
    assert (c["completed"] + c["abandoned"], c["timed_out"]) == (2, 0)


def abort_mid_call(ngx, path):
    """Sends a request, waits until its call is made, then disconnects."""
    s = socket.create_connection(("127.0.0.1", ngx.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    ngx.wait_log("slow-call: calling")
    s.close()


def test_client_abort_mid_call(echo_nginx, balanced):
    ngx = echo_nginx(server=SLOW + AFTER)
    abort_mid_call(ngx, "/slow?m=sleep&p=1000&t=10")
    assert_killed_caller_freed(ngx)
    ngx.wait_log("client prematurely closed connection")
    ngx.assert_no_log("slow-call: returned")
    balanced(ngx, workers=1)


def test_killed_caller_of_a_held_task_is_given_up(echo_nginx, balanced):
    # The runtime holds the task; its caller is killed long before its
    # deadline.  The dispatcher's once-a-second sweep sees that nobody waits
    # on the caller's semaphore any more and gives the task up (abandoned).
    ngx = echo_nginx(server=SLOW + """
    location = /given-up {
        content_by_lua_block {
            local rt = require("echo_rt").rt()
            -- no event tells that the sweep has run: poll, bounded
            for _ = 1, 500 do
                if rt:stats().abandoned == 1 then
                    break
                end
                ngx.sleep(0.01)
            end
            local s = rt:stats()
            ngx.say("abandoned=", s.abandoned, " in_flight=", s.in_flight,
                    " waiters=", require("resty.nbffi").host_stats().waiters)
        }
    }""")
    abort_mid_call(ngx, "/slow?m=hold&p=x&t=60")
    assert ngx.request("/given-up").text == \
        "abandoned=1 in_flight=0 waiters=0\n"
    # The runtime answers the held task when it is closed at worker exit,
    # which does not wait for the 60 s deadline; that completion is freed.
    balanced(ngx, workers=1)


def test_ngx_exit_from_another_light_thread(echo_nginx, balanced):
    ngx = echo_nginx(server=AFTER + """
    location = /t {
        content_by_lua_block {
            local rt = require("echo_rt").rt()
            ngx.thread.spawn(function()
                local reply = rt:call("sleep", "300", { spin = 0 })
                ngx.log(ngx.NOTICE, "exit-test: call returned ", reply)
            end)
            ngx.thread.spawn(function()
                ngx.say("exiting")
                ngx.exit(200)
            end)
        }
    }""")
    assert ngx.request("/t").text == "exiting\n"
    assert_killed_caller_freed(ngx)
    ngx.assert_no_log("exit-test: call returned")
    balanced(ngx, workers=1)
