"""The Python runtime for the test_python_* tests: libnbffi_python.so from
the meson build, the handler modules of shims/python/tests/handlers, a Lua
helper module (t_py) and an nginx fixture that has them."""

import json
import os

import pytest

from harness import REPO

HANDLERS = REPO / "shims" / "python" / "tests" / "handlers"


def cfg(handler, **extra):
    return json.dumps({"handler": handler, "path": [str(HANDLERS)], **extra})


# Runtimes by name: the location's ?rt= picks $T_PY_<NAME> as the cfg.
RUNTIMES = {
    "T_PY_ECHO": cfg("t_echo"),
    "T_PY_ECHO2": cfg("t_echo", log_level="WARNING"),
    "T_PY_ASYNC": cfg("t_async:Gate"),
    "T_PY_BATCH": cfg("t_batch:Squares"),
    "T_PY_STUCK": cfg("t_stuck"),
}

# A Lua helper module for the locations below.
T_PY_LUA = r"""
local nbffi = require "resty.nbffi"
local _M = {}

function _M.rt(name)
    return nbffi.load(os.getenv("NBFFI_PYTHON_LIB"),
                      os.getenv("T_PY_" .. name:upper()))
end

-- /py?rt=NAME&m=METHOD[&p=PAYLOAD][&t=TIMEOUT]: calls METHOD with the
-- body or p.
function _M.call()
    ngx.req.read_body()
    local rt, err = _M.rt(ngx.var.arg_rt or "echo")
    if not rt then
        ngx.status = 500
        ngx.print("load: ", err)
        return
    end
    local payload = ngx.req.get_body_data()
                    or ngx.unescape_uri(ngx.var.arg_p or "")
    local reply, status
    reply, err, status = rt:call(ngx.unescape_uri(ngx.var.arg_m), payload,
                                 tonumber(ngx.var.arg_t))
    if not reply then
        ngx.status = 500
        ngx.header["X-Status"] = status
        ngx.print(err)
        return
    end
    ngx.print(reply)
end

-- Calls rt:call(method, payloads[i]) from one light thread each, and
-- returns the threads once every call is posted (each ran up to its wait).
function _M.post(rt, method, payloads)
    local threads = {}
    for i, p in ipairs(payloads) do
        threads[i] = ngx.thread.spawn(function()
            return rt:call(method, p)
        end)
    end
    return threads
end

-- Waits for the threads of post(); the {reply, err, status} of each.
function _M.collect(threads)
    local out = {}
    for i, t in ipairs(threads) do
        local _, reply, err, status = ngx.thread.wait(t)
        out[i] = { reply, err, status }
    end
    return out
end

return _M
"""

CALL = """
location = /py {
    client_max_body_size 64m;
    client_body_buffer_size 64m;
    content_by_lua_block { require("t_py").call() }
}
"""


def python_lib(nbffi_build):
    """libnbffi_python.so of the build (skips the test if not built)."""
    lib = nbffi_build / "shims" / "python" / "libnbffi_python.so"
    if not lib.exists():
        if os.environ.get("NBFFI_PYTHON_SUITE"):
            pytest.fail(f"{lib} is missing")
        pytest.skip(f"{lib} is not built (python3-dev missing?)")
    return lib


@pytest.fixture
def py_lib(nbffi_build):
    return python_lib(nbffi_build)


@pytest.fixture
def py_nginx(nginx, nbffi_build, tmp_path):
    """nginx(...) with $NBFFI_PYTHON_LIB, the cfgs of RUNTIMES in the
    environment and the t_py Lua helper on lua_package_path."""
    lib = python_lib(nbffi_build)
    lua = tmp_path / "lua"
    lua.mkdir()
    (lua / "t_py.lua").write_text(T_PY_LUA)

    def start(server=CALL,
              init_worker='assert(require("resty.nbffi").init())', env=None,
              **kw):
        return nginx(server=server, init_worker=init_worker,
                     env={"NBFFI_PYTHON_LIB": str(lib),
                          "T_PY_HANDLERS": str(HANDLERS), **RUNTIMES,
                          **(env or {})},
                     lua_path=[lua / "?.lua"], **kw)
    return start


def py(ngx, method, body=None, rt="echo", p=None):
    path = f"/py?rt={rt}&m={method}" + (f"&p={p}" if p is not None else "")
    return ngx.request(path, "POST" if body is not None else "GET",
                       body=body)
