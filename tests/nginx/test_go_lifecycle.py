"""The life cycle of a Go runtime in a real nginx worker.

A handler that never returns and ignores its ctx cannot keep a worker
alive past worker_shutdown_timeout (+1 s) after HUP or QUIT; closing a Go
runtime gives its file descriptors back at once (200 load/close cycles
under worker_rlimit_nofile 256); nginx.conf's `env GOMAXPROCS=N;` sets the
worker's Go runtime's GOMAXPROCS.  The runtime: tests/nginx/go.
"""

import threading
import time
from pathlib import Path

import pytest

from gohelp import life_lib, nginx_s  # noqa: F401
from harness import Nginx

CALL = """
location = /call {
    content_by_lua_block {
        local rt = assert(require("resty.nbffi").load("%(lib)s"))
        ngx.log(ngx.NOTICE, "golife: calling ", ngx.var.arg_m)
        local reply, err = rt:call(ngx.var.arg_m, ngx.var.arg_p or "",
                                   tonumber(ngx.var.arg_t))
        ngx.say(reply or err)
    }
}
"""

CYCLES = """
location = /cycles {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        for i = 1, tonumber(ngx.var.arg_n) do
            local rt, err = nbffi.load("%(lib)s", "cycle")
            if not rt then
                return ngx.say("load ", i, ": ", err)
            end
            local reply, err = rt:call("echo", "x")
            if reply ~= "x" then
                return ngx.say("call ", i, ": ", err)
            end
            rt:close()
            -- rt:close() returns at once and nothing signals the end of
            -- the close to Lua: poll its state (which may say "ready"
            -- until libnbffi's thread takes the close up), so that each
            -- cycle starts after the previous runtime is gone
            for _ = 1, 5000 do
                local state = rt:state()
                if state ~= "ready" and state ~= "closing" then
                    break
                end
                ngx.sleep(0.001)
            end
            if rt:state() ~= "closed" then
                return ngx.say("close ", i, ": ", rt:state())
            end
        end
        ngx.say("ok")
    }
}
"""

SHUTDOWN_TIMEOUT = 3
ORPHANED = r"\[error\] .*runtime \S+libgolife\.so orphaned: fini reported " \
           r"1 thread\(s\) still running"


@pytest.mark.parametrize("kind", ["spin", "block"])
def test_hup_and_quit_with_a_handler_that_never_returns(
        nginx, life_lib, balanced, kind):
    ngx = nginx(main=f"worker_shutdown_timeout {SHUTDOWN_TIMEOUT}s;",
                server=CALL % {"lib": life_lib}, log_level="info")
    assert ngx.get("/call?m=echo&p=warm").text == "warm\n"

    # The caller gives up; the handler spins (or blocks) on.
    assert ngx.get(f"/call?m=stuck&p={kind}&t=0.2").text == "timeout\n"
    ngx.wait_log(f"stuck: {kind}")
    old = ngx.worker_pids()
    start = time.monotonic()
    nginx_s(ngx, "reload")
    Nginx.wait_gone(old, timeout=30)
    hup_s = time.monotonic() - start
    print(f"\n{kind}: old worker gone {hup_s:.2f} s after HUP")
    ngx.wait_log(ORPHANED)
    assert ngx.get("/call?m=echo&p=new").text == "new\n"

    # Again in the new worker, its caller still waiting: QUIT.
    client = threading.Thread(target=lambda: ngx.many(
        [f"/call?m=stuck&p={kind}&t=600"], timeout=60))
    client.start()
    ngx.wait_log(f"stuck: {kind}", count=2)
    start = time.monotonic()
    nginx_s(ngx, "quit")
    ngx.proc.wait(30)
    quit_s = time.monotonic() - start
    print(f"{kind}: nginx gone {quit_s:.2f} s after QUIT")
    client.join()
    ngx.wait_log(ORPHANED, count=2)
    # each worker freed its tasks but those of the orphaned runtime
    for allocated, freed, leaked, live in balanced(ngx, workers=2,
                                                   leaked=True):
        assert leaked > 0


def worker_fds(ngx):
    (pid,) = ngx.worker_pids()
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_load_close_cycles_give_fds_back(nginx, life_lib, balanced):
    ngx = nginx(server=CYCLES % {"lib": life_lib}, nofile=256,
                log_level="info")
    # the first load starts the Go runtime, whose netpoller keeps its fds
    assert ngx.get("/cycles?n=1").text == "ok\n"
    before = worker_fds(ngx)
    assert ngx.get("/cycles?n=200").text == "ok\n"
    after = worker_fds(ngx)
    print(f"\nworker fds: {before} before 200 load/close cycles, "
          f"{after} after")
    assert after <= before + 2
    balanced(ngx, workers=1)


@pytest.mark.parametrize("main, want", [("env GOMAXPROCS=3;", "3"),
                                        ("", "1")])
def test_gomaxprocs_from_nginx_conf(nginx, life_lib, main, want):
    ngx = nginx(main=main, server=CALL % {"lib": life_lib})
    assert ngx.get("/call?m=procs").text == want + "\n"
