"""Readiness (nbffi.ready, nbffi.serve_ready) and the warning of a second
load whose options are ignored."""

import time

# init_worker loads can only start a runtime: its state is followed by the
# readiness check from then on.
INIT_WORKER = """
local nbffi = require "resty.nbffi"
assert(nbffi.init())
local lib = os.getenv("NBFFI_ECHO_LIB")
assert(nbffi.load(lib, "threads=1", { name = "fast" }))
assert(nbffi.load(lib, "init_sleep=400", { name = "slow" }))
assert(nbffi.load(lib, "fail=nomodelhere", { name = "broken" }))
"""

READY = """
location = /ready {
    content_by_lua_block {
        require("resty.nbffi").serve_ready(ngx.var.arg_name)
    }
}
location = /check {
    content_by_lua_block {
        local ok, err = require("resty.nbffi").ready(ngx.var.arg_name)
        ngx.say(tostring(ok), " ", tostring(err))
    }
}
"""


def wait_status(ngx, path, status):
    """Polls path until it answers status (a runtime's start is not an
    event the client can wait on); returns the response."""
    end = time.monotonic() + 10
    while True:
        r = ngx.get(path)
        if r.status == status or time.monotonic() > end:
            return r
        time.sleep(0.05)


def test_ready_per_runtime_and_for_all(echo_nginx, balanced):
    ngx = echo_nginx(server=READY, init_worker=INIT_WORKER)
    ngx.wait_log(r"\[error\] .*init failed: nomodelhere")
    r = wait_status(ngx, "/ready?name=fast", 200)
    assert (r.status, r.text) == (200, "fast: ready\n")
    assert r.headers["Content-Type"] == "text/plain"
    # a failed start stays failed, with its error
    r = ngx.get("/ready?name=broken")
    assert r.status == 503
    assert r.text.startswith("broken: failed: ")
    assert "nomodelhere" in r.text
    r = wait_status(ngx, "/ready?name=slow", 200)
    assert (r.status, r.text) == (200, "slow: ready\n")
    # all: one line per runtime, sorted; not ready while one failed
    r = ngx.get("/ready")
    assert r.status == 503
    lines = r.text.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["broken", "fast", "slow"]
    assert lines[1:] == ["fast: ready", "slow: ready"]
    assert ngx.get("/check?name=fast").text == "true nil\n"
    assert ngx.get("/check?name=nope").text == "nil nope: not loaded\n"
    assert ngx.get("/ready?name=nope").status == 503
    balanced(ngx, workers=1)


def test_starting_is_not_ready(echo_nginx, balanced):
    ngx = echo_nginx(server=READY, init_worker=INIT_WORKER)
    # init_sleep=400: the first check comes while it starts
    r = ngx.get("/ready?name=slow")
    assert (r.status, r.text) in ((503, "slow: starting\n"),
                                  (200, "slow: ready\n"))
    assert wait_status(ngx, "/ready?name=slow", 200).status == 200
    balanced(ngx, workers=1)


CLOSE = """
location = /cycle {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = assert(nbffi.load(os.getenv("NBFFI_ECHO_LIB"),
                                     "threads=2", { name = "kv" }))
        ngx.say(tostring(nbffi.ready("kv")))
        rt:close()
        ngx.say(select(2, nbffi.ready("kv")))
        -- nothing else loaded: ready for all
        ngx.say(tostring(nbffi.ready()))
    }
}
"""


def test_a_closed_runtime_leaves_the_check(echo_nginx, balanced):
    ngx = echo_nginx(server=CLOSE)
    assert ngx.get("/cycle").text == "true\nkv: not loaded\ntrue\n"
    balanced(ngx, workers=1)


LOAD_TWICE = """
location = /twice {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local lib = os.getenv("NBFFI_ECHO_LIB")
        local a = assert(nbffi.load(lib, "threads=1", { timeout = 5 }))
        -- the same options, and none: no warning
        assert(nbffi.load(lib, "threads=1", { timeout = 5 }) == a)
        assert(nbffi.load(lib, "threads=1") == a)
        for _ = 1, 2 do
            local b = assert(nbffi.load(lib, "threads=1",
                                        { timeout = 7, max_queue = 8,
                                          spin = 20 }))
            assert(b == a)
        end
        ngx.say("same")
    }
}
"""


def test_second_load_with_other_options_warns_once(echo_nginx, balanced):
    ngx = echo_nginx(server=LOAD_TWICE)
    assert ngx.get("/twice").text == "same\n"
    assert ngx.get("/twice").text == "same\n"
    lines = ngx.wait_log(r"\[warn\] .*is loaded already")
    assert len(lines) == 1, lines
    # spin=20 is the default in effect: not ignored
    assert ("options of this load ignored (the first load's stay):"
            " max_queue=8, timeout=7") in lines[0]
    balanced(ngx, workers=1)
