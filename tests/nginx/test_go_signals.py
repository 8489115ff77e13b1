"""A Go runtime in an nginx worker leaves nginx's signals alone.

A c-shared Go library starts the Go runtime's threads when it is loaded;
libnbffi loads it on a thread of its own that blocks the asynchronous
signals, and the Go runtime's threads inherit that mask, so that SIGHUP,
SIGQUIT, SIGTERM, SIGUSR1, ... reach the worker's event loop thread, as
nginx expects.  Go itself unblocks SIGCHLD on each of its
threads, so nginx's SIGCHLD handler may run on one: it must have
SA_ONSTACK (Go adds it at load) so that it runs on the signal stack.
These tests load the Go gRPC example's runtime and check the masks, the
handler, child processes (io.popen, os.execute, ngx.pipe), reload, reopen
and SIGPIPE.
"""

import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from gohelp import (greeter, greeter_bin, grpc_lib, grpc_nginx,  # noqa: F401
                    nginx_s)
from harness import Nginx

# Signals nginx handles or that must reach its event loop.
NGINX_SIGNALS = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                 signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
                 signal.SIGWINCH, signal.SIGCHLD, signal.SIGALRM,
                 signal.SIGIO, signal.SIGPIPE]

CHILDREN = """
location = /children {
    content_by_lua_block {
        local f = assert(io.popen("echo popen-" .. ngx.var.arg_i))
        ngx.say(f:read("*a"):sub(1, -2))
        f:close()
        -- nginx's own SIGCHLD handler may reap the child first (then -1,
        -- or nil + ECHILD): the same with or without Go, so only the
        -- call's survival counts.  Lua 5.1 returns the wait status;
        -- LuaJIT built with LUA52COMPAT (OpenResty's) true|nil, "exit", 3.
        local rc, how, code = os.execute("exit 3")
        ngx.say(rc == 768 or rc == -1 or (rc == nil and how == "exit"
                and code == 3) or (rc == nil and code == 10))
    }
}
location = /sigchld-flags {
    content_by_lua_block {
        local ffi = require "ffi"
        ffi.cdef[[
            struct go_test_sigaction {
                void *handler;
                unsigned long mask[16];
                int flags;
                void *restorer;
            };
            int sigaction(int sig, const struct go_test_sigaction *act,
                          struct go_test_sigaction *old);
        ]]
        local old = ffi.new("struct go_test_sigaction")
        assert(ffi.C.sigaction(17, nil, old) == 0)
        ngx.say(old.handler ~= nil and "handler" or "default",
                bit.band(old.flags, 0x08000000) ~= 0 and " onstack" or "")
    }
}
location = /pipe {
    content_by_lua_block {
        local ok, pipe = pcall(require, "ngx.pipe")
        if not ok then
            ngx.say("unsupported: ", pipe)
            return
        end
        local proc = assert(pipe.spawn({"sh", "-c", "echo piped; exit 7"}))
        ngx.say(proc:stdout_read_all():sub(1, -2), " ",
                select(2, proc:wait()), " ", select(3, proc:wait()))
    }
}
location = /big {
    content_by_lua_block {
        ngx.print(string.rep("x", 8 * 1048576))
    }
}
location = /mark {
    content_by_lua_block {
        ngx.log(ngx.NOTICE, "mark ", ngx.var.arg_m)
        ngx.say("ok")
    }
}
"""


def thread_masks(pid):
    """{tid: blocked signal set} of every thread of pid."""
    masks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        bits = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M)
                   .group(1), 16)
        masks[int(task.name)] = {s for s in NGINX_SIGNALS
                                 if bits >> (s - 1) & 1}
    return masks


@pytest.fixture
def go_nginx(greeter, grpc_nginx):
    ngx = grpc_nginx(greeter().addr, server=CHILDREN)
    # a call: the runtime is up and has run Go code on its threads
    assert ngx.get("/hello?name=x").status == 200
    return ngx


def test_go_threads_block_nginx_signals(go_nginx):
    (pid,) = go_nginx.worker_pids()
    masks = thread_masks(pid)
    assert masks.pop(pid) == set(), "the event loop must get every signal"
    assert len(masks) >= 3, "expected the Go runtime's threads"
    want = set(NGINX_SIGNALS) - {signal.SIGCHLD}
    for tid, blocked in masks.items():
        assert blocked == want, f"thread {tid} takes {want - blocked}"


def test_sigchld_handler_runs_on_the_signal_stack(go_nginx):
    assert go_nginx.get("/sigchld-flags").text == "handler onstack\n"


def test_child_processes_while_go_is_busy(go_nginx):
    (pid,) = go_nginx.worker_pids()
    # Go handlers wait on the gRPC server while children come and go.
    busy = threading.Thread(target=go_nginx.many, args=(
        [f"/hello?name=b{i}&delay_ms=300" for i in range(40)], 40))
    busy.start()
    rs = go_nginx.many([f"/children?i={i}" for i in range(60)], 10)
    busy.join()
    for i, r in enumerate(rs):
        assert not isinstance(r, Exception), r
        assert (r.status, r.text) == (200, f"popen-{i}\ntrue\n")
    # nginx's SIGCHLD handler ran, and the worker survived every one
    go_nginx.wait_log(r"signal 17 \(SIGCHLD\) received")
    assert go_nginx.worker_pids() == [pid]


def test_ngx_pipe_with_go_loaded(go_nginx):
    r = go_nginx.get("/pipe")
    if r.text.startswith("unsupported: "):
        pytest.skip("ngx.pipe needs OpenResty's nginx patches: "
                    + r.text.strip())
    assert (r.status, r.text) == (200, "piped exit 7\n")


def test_reload_and_reopen_with_go_loaded(go_nginx):
    ngx = go_nginx
    old = ngx.worker_pids()
    nginx_s(ngx, "reload")
    ngx.wait_log(r"signal 1 \(SIGHUP\) received")
    Nginx.wait_gone(old)
    (new,) = ngx.worker_pids()
    assert new not in old
    assert ngx.get("/hello?name=again").status == 200

    log = ngx.prefix / "logs" / "error.log"
    log.rename(log.with_suffix(".old"))
    nginx_s(ngx, "reopen")
    # the worker writes to the new file once it has reopened it
    for i in range(200):
        ngx.get(f"/mark?m={i}")
        if log.exists() and f"[notice] {new}#{new}: *" in log.read_text() \
                and "mark" in log.read_text():
            break
    else:
        pytest.fail("the worker never wrote to the reopened error log")
    assert ngx.get("/hello?name=reopened").status == 200


def test_sigpipe_is_ignored_with_go_loaded(go_nginx):
    (pid,) = go_nginx.worker_pids()
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", go_nginx.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1024)
        # reset the connection under the worker's pending write
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert go_nginx.get("/hello?name=x").status == 200
    assert go_nginx.worker_pids() == [pid]
