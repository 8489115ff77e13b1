"""examples/stall in a real nginx: the detector names both jobs when Lua
does them, and reports nothing when the nbffi runtime does them."""

import re
import subprocess
import sys

import pytest

from conftest import HERE, status

EXAMPLE = HERE.parents[1] / "examples" / "stall"
LUA = EXAMPLE / "lua" / "stallexample.lua"

SERVER = """
        location ~ ^/((rt/)?(md5|fetch))$ {
            content_by_lua_block {
                require("stallexample").serve(ngx.var[1])
            }
        }
        location = /stalls {
            content_by_lua_block { require("stallwork").status() }
        }
"""


def line_of(pattern):
    """The line of stallexample.lua matching pattern."""
    for n, text in enumerate(LUA.read_text().splitlines(), 1):
        if re.search(pattern, text):
            return n
    raise LookupError(pattern)


@pytest.fixture
def slow_server(tmp_path):
    """The example's slow server on a free port (100 ms delay)."""
    from harness import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE / "slow_server.py"),
                             str(port), "100"], stdin=subprocess.DEVNULL)
    yield port
    proc.terminate()
    proc.wait(10)


def test_example_named_in_lua_quiet_in_runtime(stall_nginx, nbffi_build,
                                                slow_server):
    rt = nbffi_build / "stall" / "libstallwork.so"
    if not rt.exists():
        pytest.skip("libstallwork.so not built (no libcrypto)")
    ngx = stall_nginx(
        start="{ threshold = 0.05 }", server=SERVER,
        lua_path=[EXAMPLE / "lua" / "?.lua"],
        init_worker_extra='require("resty.nbffi").init()',
        env={"STALL_EXAMPLE_RT": str(rt),
             "STALL_EXAMPLE_SLOW": str(slow_server),
             "STALL_EXAMPLE_MD5_N": "100000"})

    # In Lua: both named, at the lines of the example.
    for job in ("md5", "fetch"):
        r = ngx.get("/" + job)
        assert r.status == 200, r.text
    ngx.wait_log(r"stall 2: [\d.]+ ms in content GET /fetch,")
    stalls = {s["context"]: s for s in status(ngx)["stalls"]}
    assert set(stalls) == {"content GET /md5", "content GET /fetch"}, stalls

    md5_call = f"{LUA}:{line_of(r'ngx_md5[(]')}"
    md5 = stalls["content GET /md5"]["backtraces"][0]["frames"]
    assert md5[0]["name"] == "random_string", md5
    assert md5[1] == {"where": md5_call, "name": "md5"}, md5

    fetch = stalls["content GET /fetch"]
    assert fetch["wait_ms"] > fetch["cpu_ms"], fetch
    top = fetch["backtraces"][0]["frames"][0]
    assert top["name"] == "fetch", top
    recv = line_of(r"C[.]recv[(]")
    assert top["where"] in (f"{LUA}:{recv}", f"{LUA}:{recv + 1}"), top

    # In the runtime: the same jobs, no stall.  Reports come in order, so
    # once the Lua job after them is reported, none of them was.
    for job in ("rt/md5", "rt/fetch", "rt/md5", "rt/fetch"):
        r = ngx.get("/" + job)
        assert r.status == 200, r.text
    assert ngx.get("/fetch").status == 200
    ngx.wait_log(r"stall 3: [\d.]+ ms in content GET /fetch,")
    contexts = [s["context"] for s in status(ngx)["stalls"]]
    assert contexts == ["content GET /fetch", "content GET /fetch",
                        "content GET /md5"], contexts
