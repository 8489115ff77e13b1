"""The dispatcher's path: nothing one call does can stop the others
(invariant 8), and a notifier that cannot be made or that a hostile
process races to leaves the worker serving."""

import os
import socket
import threading
import time
from pathlib import Path

from harness import Nginx

CALLS = """
location = /batch {
    content_by_lua_block {
        -- calls from light threads at once, none spinning: the dispatcher
        -- reaps their completions in batches with the one that fails
        local rt = require("echo_rt").rt("threads=4")
        local bad = ngx.var.arg_bad
        local opts = { timeout = 10, spin = 0 }
        local threads = {}
        for i = 1, 20 do
            threads[i] = ngx.thread.spawn(function()
                if i == 10 then
                    return rt:call(bad, ngx.var.arg_p or "", opts)
                end
                return rt:call("echo", "ok" .. i, opts)
            end)
        end
        local out = {}
        for i = 1, 20 do
            local _, reply, err = ngx.thread.wait(threads[i])
            out[#out + 1] = i .. "=" .. tostring(reply or err)
        end
        ngx.say(table.concat(out, "\\n"))
    }
}
location = /echo {
    content_by_lua_block {
        local rt = require("echo_rt").rt("threads=4")
        ngx.say(rt:call("echo", ngx.var.arg_p, 10))
    }
}
location = /stats {
    content_by_lua_block {
        local s = require("resty.nbffi").host_stats()
        ngx.say(s.tasks_live, " ", s.waiters, " ", tostring(s.dispatching),
                " ", s.dispatcher_errors, " ", tostring(s.notifier_error))
    }
}
"""


def results(text):
    return dict(line.split("=", 1) for line in text.splitlines())


def test_reply_too_large_fails_only_its_call(echo_nginx, balanced):
    # libecho's "huge" hands over an untouched 2 GiB mapping: more than a
    # LuaJIT string can hold (2^31 - 256 bytes).
    ngx = echo_nginx(server=CALLS)
    r = ngx.request("/batch?bad=huge")
    assert r.status == 200
    got = results(r.text)
    assert got["10"] == ("reply too large for a Lua string: 2147483648 "
                         "bytes (the most is 2147483392)")
    assert all(got[str(i)] == f"ok{i}" for i in range(1, 21) if i != 10)
    # the worker goes on serving, its dispatcher with it
    assert ngx.request("/echo?p=after").text == "after\n"
    assert ngx.request("/stats").text.split()[:3] == ["0", "0", "true"]
    # the mapping was handed back (munmap'd) and every task freed
    balanced(ngx, workers=1)


INJECT = """
    -- an error in the reap path, injected where the dispatcher copies a
    -- reply: the dispatcher's deliver() calls ffi.string through an upvalue
    local dispatcher = require "resty.nbffi.dispatcher"
    local deliver
    for i = 1, 100 do
        local name, fn = debug.getupvalue(dispatcher.reap_all, i)
        if not name then break end
        if name == "reap_batches" then
            for j = 1, 100 do
                local n, f = debug.getupvalue(fn, j)
                if not n then break end
                if n == "deliver" then deliver = f end
            end
        end
    end
    assert(deliver, "deliver not found")
    for i = 1, 100 do
        local name, fn = debug.getupvalue(deliver, i)
        if not name then break end
        if name == "ffi_string" then
            debug.setupvalue(deliver, i, function(p, len)
                local s = fn(p, len)
                if s == "poison" then
                    error("injected failure")
                end
                return s
            end)
        end
    end
"""


def test_error_in_reap_path_fails_only_its_call(echo_nginx, balanced):
    ngx = echo_nginx(server=CALLS, init_worker=(
        'assert(require("resty.nbffi").init())\n' + INJECT))
    r = ngx.request("/batch?bad=echo&p=poison")
    got = results(r.text)
    assert got["10"].startswith("cannot deliver the reply: ")
    assert "injected failure" in got["10"]
    assert all(got[str(i)] == f"ok{i}" for i in range(1, 21) if i != 10)
    ngx.wait_log(r"nbffi: error while delivering a reply: .*injected")
    # twice more: the dispatcher carries on, and counts
    for _ in range(2):
        got = results(ngx.request("/batch?bad=echo&p=poison").text)
        assert got["1"] == "ok1"
    live, waiting, dispatching, errors, _ = \
        ngx.request("/stats").text.split()
    assert (live, waiting, dispatching, errors) == ("0", "0", "true", "3")
    ngx.allow(r"error while delivering a reply")
    balanced(ngx, workers=1)


def notifier_dirs(tmpdir):
    return [d for d in Path(tmpdir).iterdir() if d.name.startswith("nbffi-")]


def test_tmpdir_missing_is_one_clear_error(echo_nginx, tmp_path, balanced):
    missing = tmp_path / "no-such-dir"
    ngx = echo_nginx(server=CALLS, env={"TMPDIR": str(missing)},
                     log_level="info")
    ngx.allow(r"no dispatcher in this worker")
    # callers reap by themselves: calls work, slower
    assert ngx.request("/echo?p=x").text == "x\n"
    got = results(ngx.request("/batch?bad=echo&p=y").text)
    assert got["10"] == "y"
    lines = ngx.wait_log(r"no dispatcher in this worker")
    assert f'TMPDIR "{missing}"' in lines[0]
    assert "No such file or directory" in lines[0]
    # the tick does not retry and log again every second: watch two ticks
    time.sleep(2.5)
    assert len([ln for ln in ngx.error_log().splitlines()
                if "dispatcher" in ln and "[error]" in ln]) == 1
    stats = ngx.request("/stats").text.split()
    assert stats[2] == "false" and stats[0] == "0"
    balanced(ngx, workers=1)


def test_tmpdir_too_long_names_the_limit(echo_nginx, tmp_path, balanced):
    long_dir = tmp_path / ("d" * 100)
    long_dir.mkdir()
    ngx = echo_nginx(server=CALLS, env={"TMPDIR": str(long_dir)})
    ngx.allow(r"no dispatcher in this worker")
    assert ngx.request("/echo?p=x").text == "x\n"
    [line] = ngx.wait_log(r"no dispatcher in this worker")
    assert "over the 107 a unix socket path can hold" in line
    assert "set TMPDIR to a shorter directory" in line
    assert "payload or method name too large" not in line
    assert notifier_dirs(long_dir) == []
    balanced(ngx, workers=1)


def test_a_process_racing_the_notifier_is_refused(echo_nginx, tmp_path,
                                                  nbffi_build, balanced):
    # Another process of the same user connects to each notifier socket
    # before the worker's dispatcher does (race_preload.c makes the worker
    # wait for it): accept refuses it and takes the worker's own.
    fifo = tmp_path / "race"
    os.mkfifo(fifo)
    preload = nbffi_build / "tests" / "nginx" / "libnbffi_race.so"
    raced = []
    failed = []

    def racer():
        # Opened read-write, the FIFO always has a writer: a worker's line
        # written between one reader's EOF and the next open would be lost
        # (the worker then waits out race_preload's 10 s).  An empty line
        # ends it.
        with open(os.open(fifo, os.O_RDWR)) as f:
            for line in f:
                path = line.strip()
                if not path:
                    return
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                    raced.append(s)     # kept open: a live hostile peer
                except OSError as e:
                    failed.append(f"{path}: {e}")
                Path(path).with_name("raced").touch()

    t = threading.Thread(target=racer, daemon=True)
    t.start()
    ngx = echo_nginx(server=CALLS, workers=2, log_level="info",
                     env={"LD_PRELOAD": str(preload),
                          "NBFFI_RACE_FIFO": str(fifo)})
    for _ in range(5):
        assert ngx.request("/echo?p=z").text == "z\n"
        Nginx.wait_gone(ngx.reload())
    assert ngx.request("/echo?p=z").text == "z\n"
    with open(fifo, "w") as f:
        f.write("\n")
    t.join()
    # every worker's dispatcher started, after refusing the racer
    refused = ngx.wait_log(r"notifier refused 1 connection\(s\) from other"
                           r" processes", count=12)
    assert failed == []
    assert len(raced) == len(refused) == 12
    ngx.assert_no_log(r"nbffi: dispatcher: ")
    ngx.assert_no_log(r"no dispatcher in this worker")
    balanced(ngx, workers=12)
    for s in raced:
        s.close()
