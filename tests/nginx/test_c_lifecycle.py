"""Worker life cycle: reload under load, quit with calls in flight."""

import os
import signal
import threading
import time

from conftest import exit_counters
from harness import Load, Nginx

CALL = """
location = /call {
    content_by_lua_block {
        -- slow calls get their own runtime: fast ones never queue behind
        local rt = require("echo_rt").rt(ngx.var.arg_m == "echo"
                                         and "threads=1" or "threads=4")
        ngx.log(ngx.NOTICE, "call-test: calling ", ngx.var.arg_m)
        local reply, err = rt:call(ngx.var.arg_m, ngx.var.arg_p,
                                   tonumber(ngx.var.arg_t))
        if not reply then
            ngx.status = 500
        end
        ngx.say(reply or err)
    }
}
"""


def test_reload_under_load(echo_nginx, balanced):
    # NBFFI_RELOAD_SECONDS: how long the client runs (default 10).
    seconds = float(os.environ.get("NBFFI_RELOAD_SECONDS", "10"))
    ngx = echo_nginx(server=CALL, workers=2, log_level="info")
    fast = Load(ngx, "/call?m=echo&p=fast", seconds, 12,
                lambda r: (r.status, r.body) == (200, b"fast\n"))
    # calls that are in flight when the HUPs come
    slow = Load(ngx, "/call?m=sleep&p=50", seconds, 8,
                lambda r: (r.status, r.body) == (200, b"slept\n"))
    fast.start()
    slow.start()
    for _ in range(2):
        time.sleep(seconds / 3)     # the client's schedule, not a sync
        Nginx.wait_gone(ngx.reload(), timeout=10)
    ok_fast, failed_fast = fast.join()
    ok_slow, failed_slow = slow.join()
    assert failed_fast == [] and failed_slow == []
    assert ok_fast > 0 and ok_slow > 0
    # three generations of two workers, each balanced at exit
    balanced(ngx, workers=6)


def test_quit_lets_calls_in_flight_finish(echo_nginx, balanced):
    ngx = echo_nginx(server=CALL)
    result = {}

    def client():
        result["r"] = ngx.request("/call?m=sleep&p=300")

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log("call-test: calling sleep")
    ngx.proc.send_signal(signal.SIGQUIT)
    t.join()
    assert (result["r"].status, result["r"].text) == (200, "slept\n")
    balanced(ngx, workers=1)


def test_quit_with_a_held_call_times_out_then_frees(echo_nginx, balanced):
    # The runtime holds the task until it is closed, which happens only at
    # exit, after the caller gave up: the caller gets "timeout", then the
    # runtime is freed and the held task's completion freed with it.
    ngx = echo_nginx(server=CALL)
    result = {}

    def client():
        result["r"] = ngx.request("/call?m=hold&p=x&t=0.3")

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log("call-test: calling hold")
    ngx.proc.send_signal(signal.SIGQUIT)
    t.join()
    assert (result["r"].status, result["r"].text) == (500, "timeout\n")
    [(allocated, freed, _, live)] = balanced(ngx, workers=1)
    assert allocated == 2       # the runtime's load task and the call


def test_call_after_the_dispatcher_left_at_exit(echo_nginx, balanced):
    # A request the old worker is still finishing calls after the
    # dispatcher has gone: the call reaps by itself and succeeds.
    ngx = echo_nginx(server="""
    location = /late {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local rt = require("echo_rt").rt()
            ngx.log(ngx.NOTICE, "late-call: waiting for exit")
            -- no event tells a request that its worker is exiting: poll
            for _ = 1, 1000 do
                if ngx.worker.exiting()
                   and not nbffi.host_stats().dispatching
                then
                    break
                end
                ngx.sleep(0.01)
            end
            ngx.say(ngx.worker.exiting(), " ",
                    nbffi.host_stats().dispatching, " ",
                    rt:call("echo", "late", { spin = 0 }))
        }
    }""")
    result = {}

    def client():
        result["r"] = ngx.request("/late")

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log("late-call: waiting for exit")
    ngx.proc.send_signal(signal.SIGQUIT)
    t.join()
    assert result["r"].text == "true false late\n"
    balanced(ngx, workers=1)


def test_idle_worker_without_runtime_exits_cleanly(nginx):
    # nbffi.init() alone: a host and a dispatcher, no runtime, no call.
    ngx = nginx(init_worker='assert(require("resty.nbffi").init())')
    Nginx.wait_gone(ngx.reload())
    assert ngx.quit()
    assert exit_counters(ngx, ngx.exits_before) == [(0, 0, 0, 0), (0, 0, 0, 0)]
