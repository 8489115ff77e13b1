"""Worker life cycle: reload under load, quit with calls in flight."""

import os
import signal
import threading
import time

from conftest import exit_counters
from harness import Load, Nginx, wait_reply

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


STUCK = """
location = /stuck {
    content_by_lua_block {
        -- a handler that never returns: the C runtime's thread sleeps
        -- in it (libecho's sleep ignores cancellation)
        local rt = require("echo_rt").rt("threads=1")
        ngx.log(ngx.NOTICE, "stuck-test: calling")
        local reply, err = rt:call("sleep", "100000000",
                                   tonumber(ngx.var.arg_t))
        ngx.say(reply or err)
    }
}
location = /echo {
    content_by_lua_block {
        ngx.say(require("echo_rt").rt("threads=2"):call("echo", "e"))
    }
}
"""


def test_stuck_handler_and_request_reload_bounded(echo_nginx, balanced):
    # A request waits on a call whose handler never returns.  After HUP,
    # worker_shutdown_timeout closes the request at 3 s, then the runtime
    # gets what is left (at least 0.5 s) and is orphaned: the old worker
    # is gone within 3 + 1 s, and QUIT then stops nginx.
    ngx = echo_nginx(server=STUCK, main="worker_shutdown_timeout 3s;",
                     log_level="info")
    ngx.allow(r"orphaned")
    closed = []

    def client():
        try:
            ngx.request("/stuck?t=600", timeout=60)
        except ConnectionError as e:    # closed by worker_shutdown_timeout
            closed.append(e)

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log("stuck-test: calling")
    start = time.monotonic()
    Nginx.wait_gone(ngx.reload(), timeout=30)
    took = time.monotonic() - start
    print(f"HUP to old worker gone: {took:.2f} s")
    ngx.wait_log(r"runtime .*libecho\.so orphaned: fini reported 1 "
                 r"thread\(s\) still running")
    t.join()
    assert len(closed) == 1
    assert ngx.request("/echo").text == "e\n"
    start = time.monotonic()
    counters = balanced(ngx, workers=2, leaked=True)
    print(f"QUIT to nginx gone: {time.monotonic() - start:.2f} s")
    # the old worker leaked the task its stuck thread held, nothing else
    assert [c[2] for c in counters] == [1, 0]


def test_stuck_handler_without_request_reload_bounded(echo_nginx, balanced):
    # The caller gave up long ago; the runtime's thread is still stuck.
    # No request holds the worker: it leaves at once and its runtime gets
    # the whole worker_shutdown_timeout to stop, then is orphaned.
    ngx = echo_nginx(server=STUCK, main="worker_shutdown_timeout 2s;",
                     log_level="info")
    ngx.allow(r"orphaned")
    assert ngx.request("/stuck?t=0.1").text == "timeout\n"
    start = time.monotonic()
    Nginx.wait_gone(ngx.reload(), timeout=30)
    took = time.monotonic() - start
    print(f"HUP to old worker gone: {took:.2f} s")
    ngx.assert_log(r"runtime .*libecho\.so orphaned")
    balanced(ngx, workers=2, leaked=True)


def test_stuck_handler_quit_without_shutdown_timeout(echo_nginx, balanced):
    # No worker_shutdown_timeout: the runtime gets close_timeout (here
    # 1 s; 5 s by default), then the worker exits anyway.
    ngx = echo_nginx(server=STUCK, log_level="info", init_worker="""
        assert(require("resty.nbffi").init())
        require("echo_rt").rt("threads=1", { close_timeout = 1 })
    """)
    ngx.allow(r"orphaned")
    assert ngx.request("/stuck?t=0.1").text == "timeout\n"
    start = time.monotonic()
    balanced(ngx, workers=1, leaked=True)
    took = time.monotonic() - start
    print(f"QUIT to nginx gone: {took:.2f} s")


# The runtime loaded in init_worker, kept where the locations find it
# without loading it again (a load in a handler waits for the start).
STARTED = """
location = /plain {
    content_by_lua_block {
        ngx.say("plain ", (package.loaded.started_rt:state()))
    }
}
location = /call {
    content_by_lua_block {
        local reply, err = package.loaded.started_rt:call("echo",
                                                          ngx.var.arg_p, 30)
        ngx.say(reply or err)
    }
}
"""


def start_in_init_worker(cfg):
    return f"""
        package.loaded.started_rt = require("resty.nbffi").load(
            os.getenv("NBFFI_ECHO_LIB"), "{cfg}")
    """


def test_slow_start_in_init_worker_blocks_nothing(echo_nginx, balanced):
    # The runtime's init takes 1.5 s on a thread of libnbffi.  Meanwhile
    # a location that does not use it is served (and sees it starting),
    # and a call made before it is ready waits for it.  The threads that
    # init starts may answer that call a moment before libnbffi's start
    # thread marks the runtime ready (docs/limits.md): the state follows.
    ngx = echo_nginx(server=STARTED,
                     init_worker=start_in_init_worker("init_sleep=1500"))
    assert ngx.request("/plain").text == "plain starting\n"
    assert ngx.request("/call?p=early").text == "early\n"
    assert wait_reply(ngx, "/plain", "plain ready\n", timeout=5) \
        == "plain ready\n"
    balanced(ngx, workers=1)


def test_failed_start_in_init_worker(echo_nginx, balanced):
    ngx = echo_nginx(server=STARTED,
                     init_worker=start_in_init_worker("fail=nomodel"))
    ngx.allow(r"init failed: nomodel")
    want = (f"runtime init failed: {ngx.env['NBFFI_ECHO_LIB']}: init "
            "failed: nomodel\n")
    for _ in range(3):
        assert ngx.request("/call?p=x").text == want
    assert ngx.request("/plain").text == "plain failed\n"
    # logged once, at error level, however many calls
    assert len(ngx.wait_log(r"\[error\].*init failed: nomodel")) == 1
    balanced(ngx, workers=1)


def test_load_in_a_handler_waits_or_times_out(echo_nginx, balanced):
    ngx = echo_nginx(init_worker="", log_level="info", server="""
    location = /load {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local rt, err = nbffi.load(os.getenv("NBFFI_ECHO_LIB"),
                ngx.unescape_uri(ngx.var.arg_cfg),
                { load_timeout = tonumber(ngx.var.arg_t) })
            if not rt then
                return ngx.say(err)
            end
            ngx.say(rt:state(), " ", rt:call("echo", "up"))
        }
    }""")
    ngx.allow(r"init did not return within the start deadline")
    assert ngx.request("/load?cfg=init_sleep%3D300&t=10").text \
        == "ready up\n"
    r = ngx.request("/load?cfg=init_sleep%3D2000&t=0.3")
    assert "init did not return within the start deadline" in r.text
    # the late init is stopped when it returns
    ngx.wait_log(r"init returned after the host gave up on it")
    balanced(ngx, workers=1)


def test_echo_refuses_negative_sleeps(echo_nginx, balanced):
    """A negative time is refused, not slept on (nanosleep's EINVAL once
    made the runtime spin forever)."""
    ngx = echo_nginx(init_worker="", server="""
    location = /t {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local rt, err = nbffi.load(os.getenv("NBFFI_ECHO_LIB"),
                                       "init_sleep=-1")
            ngx.say(rt and "loaded" or err)
            rt = assert(nbffi.load(os.getenv("NBFFI_ECHO_LIB")))
            local _, e = rt:call("sleep", "-5")
            ngx.say(e)
            ngx.say(rt:call("sleep", "0"))
        }
    }""")
    ngx.allow(r"init_sleep must be")
    loaded, slept, zero = ngx.request("/t").text.splitlines()
    assert loaded.startswith("runtime init failed: "), loaded
    assert loaded.endswith('init failed: cfg: init_sleep must be 0..3600000'
                           ' ms, got "-1"'), loaded
    assert slept == "runtime error 2: sleep: milliseconds >= 0 expected"
    assert zero == "slept"
    balanced(ngx, workers=1)
