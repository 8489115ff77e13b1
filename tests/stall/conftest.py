"""Fixtures for the stall detector's tests: tests/nginx's harness and its
nginx fixture (loaded from there, not copied), with libnbffi_stall and the
work of lua/stallwork.lua."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NGINX_TESTS = HERE.parent / "nginx"
sys.path.insert(0, str(NGINX_TESTS))

_spec = importlib.util.spec_from_file_location(
    "nginx_conftest", NGINX_TESTS / "conftest.py")
_nginx_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nginx_conftest)

nginx = _nginx_conftest.nginx
nbffi_build = _nginx_conftest.nbffi_build

WORK = HERE / "lua" / "stallwork.lua"

SERVER = """
        location /plain { content_by_lua_block { ngx.say("ok") } }
        location = /stalls {
            content_by_lua_block { require("stallwork").status() }
        }
        location ~ ^/(spin|nap|shell|slurp|timer|on|off)$ {
            content_by_lua_block { require("stallwork").run(ngx.var[1]) }
        }
"""


def line_of(marker):
    """The line of stallwork.lua that carries "-- @marker"."""
    for n, text in enumerate(WORK.read_text().splitlines(), 1):
        if re.search(rf"-- @{marker}\b", text):
            return n
    raise LookupError(marker)


def where(marker):
    return f"{WORK}:{line_of(marker)}"


@pytest.fixture(scope="session")
def stall_lib(nbffi_build):
    lib = nbffi_build / "stall" / "libnbffi_stall.so"
    if not lib.exists():
        pytest.fail(f"{lib} is missing: install libluajit2-5.1-dev and "
                    "run 'ninja -C build'")
    return lib


@pytest.fixture
def stall_nginx(nginx, stall_lib):
    """nginx(**kw) with the detector started in init_worker: start= is the
    Lua table of options (threshold 50 ms by default), jit= "on" or "off"
    (forced before the start: off also flushes compiled code),
    init_worker_extra= Lua run after the start."""
    def start(start="{ threshold = 0.05 }", jit="on", server=SERVER,
              init_worker_extra="", lua_path=(), env=None, **kw):
        flush = "jit.flush()" if jit == "off" else ""
        init_worker = (f"jit.{jit}() {flush}\n"
                       f'assert(require("resty.nbffi.stall").start({start}))'
                       f"\n{init_worker_extra}")
        return nginx(init_worker=init_worker, server=server,
                     env={"NBFFI_STALL_LIB": str(stall_lib), **(env or {})},
                     lua_path=[HERE / "lua" / "?.lua", *lua_path], **kw)
    return start


def status(ngx):
    """One worker's /stalls: {"pid", "stats", "stalls"}."""
    r = ngx.get("/stalls")
    assert r.status == 200, r.text
    s = json.loads(r.body)
    if s["stalls"] == {}:       # cjson writes an empty table as an object
        s["stalls"] = []
    return s


def wait_report(ngx, uri, timeout=30):
    """Waits for the summary line of a stall in a request for uri."""
    return ngx.wait_log(rf"stall \d+: [\d.]+ ms in \w+ GET {re.escape(uri)},",
                        timeout=timeout)
