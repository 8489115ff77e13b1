"""The Python shim in a real nginx: Lua calls handlers in an embedded
CPython (shims/python/tests/handlers) through resty.nbffi."""

import os

import pytest

from pyhelp import CALL, py, py_nginx  # noqa: F401


def test_sync_payloads(py_nginx, balanced):
    ngx = py_nginx()
    for body in [b"", b"hello", b"\0", b"a\0b\xff\0", os.urandom(65536),
                 os.urandom(1 << 20), os.urandom(16 << 20)]:
        r = py(ngx, "echo", body)
        assert (r.status, len(r.body)) == (200, len(body))
        assert r.body == body
    r = py(ngx, "grow", p="33554432")           # 32 MiB reply
    assert r.status == 200
    assert r.body == bytes(range(256)) * (1 << 17)
    assert py(ngx, "nothing", b"x").body == b""
    balanced(ngx, workers=1)


def test_unicode(py_nginx):
    ngx = py_nginx()
    text = "héllo wörld — 你好 🐍"
    r = py(ngx, "reverse", text.encode())
    assert (r.status, r.body.decode()) == (200, text[::-1])
    # a method name that is not ASCII reaches the handler's grüß()
    r = py(ngx, "gr%C3%BC%C3%9F", "dich €".encode())
    assert (r.status, r.body.decode()) == (200, "grüß dich €")


def test_exceptions_are_error_replies(py_nginx):
    ngx = py_nginx()
    r = py(ngx, "boom", b"x")
    assert (r.status, r.headers["X-Status"]) == (500, "1")
    lines = r.text.split("\n")
    assert lines[0] == "runtime error 1: ValueError: boom: x"
    assert lines[1] == "Traceback (most recent call last):"
    assert any("t_echo.py" in ln and "in boom" in ln for ln in lines)
    r = py(ngx, "refuse", b"y")
    assert (r.status, r.headers["X-Status"], r.text) == \
        (500, "7", "runtime error 7: refused y")
    r = py(ngx, "wrong", b"")
    assert r.text.startswith("runtime error 1: TypeError: handler returned "
                             "int")
    r = py(ngx, "nope", b"")
    assert (r.headers["X-Status"], r.text.split(";")[0]) == \
        ("2", "runtime error 2: no method 'nope'")
    # the worker and the runtime keep serving
    assert py(ngx, "echo", b"after").body == b"after"
    ngx.assert_no_log(r"\[(alert|crit|emerg)\]")


def test_async_calls_overlap(py_nginx):
    ngx = py_nginx(server=CALL + """
    location = /gate {
        content_by_lua_block {
            local t_py = require "t_py"
            local rt = assert(t_py.rt("async"))
            local waits = {}
            for i = 1, 300 do waits[i] = "w" .. i end
            -- 300 awaits pending at once; open releases them all
            local threads = t_py.post(rt, "wait", waits)
            local opened = rt:call("open", "")
            local ok = 0
            for i, r in ipairs(t_py.collect(threads)) do
                if r[1] == waits[i] then ok = ok + 1 end
            end
            ngx.say(ok, " ", opened, " ", rt:call("waiting_count", ""))
        }
    }""")
    assert ngx.request("/gate").text == "300 opened 300\n"
    r = py(ngx, "boom", b"k", rt="async")
    assert r.text.startswith("runtime error 1: KeyError: 'k'")


def test_batches(py_nginx):
    ngx = py_nginx(server=CALL + """
    location = /batch {
        content_by_lua_block {
            local t_py = require "t_py"
            local rt = assert(t_py.rt("batch"))
            local out = t_py.collect(t_py.post(rt, "square",
                { "0", "1", "2", "3", "4", "x", "6", "7" }))
            for _, r in ipairs(out) do
                ngx.say(r[1] or r[2]:match("^[^\\n]*"))
            end
            ngx.say(rt:call("sizes_seen", ""))
        }
    }""")
    # max_size 4 with a 60 s wait: two full batches, one bad item in one
    assert ngx.request("/batch").text.split("\n") == [
        "0", "1", "4", "9", "16",
        "runtime error 1: ValueError: not a number: x",
        "36", "49", "4,4", ""]


@pytest.mark.parametrize("handler, message", [
    ("no_such_module", "ModuleNotFoundError: No module named "
                       "'no_such_module'"),
    ("t_syntax", "SyntaxError: expected ':'"),
    ("t_raises", "RuntimeError: import-time failure"),
    ("t_echo:Nope", "AttributeError: module 't_echo' has no attribute "
                    "'Nope'"),
])
def test_bad_handler_fails_load(py_nginx, handler, message):
    ngx = py_nginx(server=CALL + """
    location = /bad {
        content_by_lua_block {
            local cfg = '{"handler": "' .. ngx.var.arg_h .. '", "path": ["'
                        .. os.getenv("T_PY_HANDLERS") .. '"]}'
            local rt, err = require("resty.nbffi").load(
                os.getenv("NBFFI_PYTHON_LIB"), cfg)
            ngx.print(rt and "loaded" or err)
        }
    }""")
    r = ngx.request("/bad?h=" + handler)
    assert r.status == 200
    assert r.text.startswith("runtime init failed: ")
    assert f"python: cannot load handler '{handler}': {message}" in r.text
    assert py(ngx, "echo", b"still serving").body == b"still serving"


def test_bad_cfg_fails_load(py_nginx):
    ngx = py_nginx(server=CALL + """
    location = /bad {
        content_by_lua_block {
            local nbffi = require "resty.nbffi"
            local lib = os.getenv("NBFFI_PYTHON_LIB")
            for _, c in ipairs({ "", "{", '{"handler": "m", "x": 1}',
                                 '{"handler": "m", "venv": "/nowhere"}' }) do
                local rt, err = nbffi.load(lib, c)
                ngx.say(rt and "loaded" or err)
            end
        }
    }""")
    lines = ngx.request("/bad").text.split("\n")
    assert all(ln.startswith("runtime init failed: ") and
               "libnbffi_python.so: init failed: python cfg: " in ln
               for ln in lines[:4]), lines
    assert [ln.split(": python cfg: ", 1)[1] for ln in lines[:4]] == [
        'cfg is empty: name a handler, e.g. "module:Class"',
        "cfg is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
        "unknown cfg key(s) x; known: batch, close_timeout, handler, "
        "log_level, options, path, venv",
        "handler 'm': \"venv\": /nowhere is not a virtualenv (no pyvenv.cfg)"]
    assert lines[4:] == [""]


def test_logging_lands_in_the_error_log(py_nginx):
    ngx = py_nginx()
    assert py(ngx, "warn", b"w1").body == b"ok"
    ngx.wait_log(r"\[warn\] .*t_echo: warned w1")
    ngx.wait_log(r"\[info\] .*nbffi: serving t_echo \(blocking\): boom, ")
    ngx.assert_no_log("debug w1")      # below the runtime's log_level


def test_runtimes_share_one_interpreter(py_nginx):
    ngx = py_nginx()
    assert py(ngx, "put", b"from echo").body == b"ok"
    assert py(ngx, "get", b"", rt="echo2").body == b"from echo"
    pids = {py(ngx, "pid", b"", rt=rt).text for rt in ("echo", "echo2")}
    assert pids == {str(p) for p in ngx.worker_pids()}


def test_close_finishes_pending_calls(py_nginx):
    ngx = py_nginx(server=CALL + """
    location = /close {
        content_by_lua_block {
            local t_py = require "t_py"
            local rt = assert(t_py.rt("async"))
            local sleeps = {}
            for i = 1, 50 do sleeps[i] = "0.05" end
            local threads = t_py.post(rt, "sleep", sleeps)
            rt:close()
            local ok = 0
            for _, r in ipairs(t_py.collect(threads)) do
                if r[1] == "slept 0.05" then ok = ok + 1 end
            end
            ngx.say(ok, " ", select(2, rt:call("sleep", "0")))
            -- a new runtime with the same cfg, in the same interpreter
            local again = assert(t_py.rt("async"))
            ngx.say(again ~= rt, " ", again:call("sleep", "0"))
        }
    }""")
    assert ngx.request("/close").text == "50 closed\ntrue slept 0\n"


def test_reload_and_exit(py_nginx, balanced):
    ngx = py_nginx()
    assert py(ngx, "echo", b"gen1").body == b"gen1"
    old = ngx.reload()
    ngx.wait_gone(old)
    # the new worker starts its own interpreter
    assert py(ngx, "pid", b"").text == str(ngx.worker_pids()[0])
    assert py(ngx, "echo", b"gen2").body == b"gen2"
    balanced(ngx)
