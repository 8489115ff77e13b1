"""docs/operations.md's deploy recipe with a C runtime: a new library
installed under a new inode, then a reload, under load: the reply changes
and no request fails."""

import subprocess
import sys
import time

from harness import REPO, Load, Nginx, build_dir

sys.path.insert(0, str(REPO / "tests" / "docs"))
from docblocks import doc_block  # noqa: E402

SERVER = """
location = /hello {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt, err = nbffi.load(os.getenv("T_DEPLOY_LIB"))
        if not rt then
            ngx.status = 500
            return ngx.say(err)
        end
        local reply, err = rt:call("hello", "x", 5)
        if not reply then
            ngx.status = 500
        end
        ngx.say(reply or err)
    }
}
"""

INIT_WORKER = """
local nbffi = require "resty.nbffi"
assert(nbffi.init())
nbffi.load(os.getenv("T_DEPLOY_LIB"), "", { name = "hello" })
"""


def build_hello(out, greeting):
    """docs/runtime-c.md's hello.c, greeting instead of "hello, "."""
    src = out.with_suffix(".c")
    src.write_text(doc_block("runtime-c.md", "hello.c: a complete")
                   .replace('"hello, "', f'"{greeting}"'))
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(out),
                    str(src), f"-I{REPO / 'core' / 'include'}",
                    f"-L{build_dir() / 'core'}", "-lnbffi"], check=True)
    return out


def wait_reply(ngx, path, want, timeout=20):
    end = time.monotonic() + timeout
    while True:
        r = ngx.get(path)
        if r.text == want or time.monotonic() > end:
            return r.text
        time.sleep(0.05)


def test_install_then_reload_under_load(nginx, tmp_path, balanced):
    recipe = doc_block("operations.md", "build the new library")
    assert "install -m 0644 " in recipe and "nginx -s reload" in recipe
    live = tmp_path / "lib" / "libhello.so"
    live.parent.mkdir()
    subprocess.run(["install", "-m", "0644",
                    str(build_hello(tmp_path / "v1.so", "hello, ")),
                    str(live)], check=True)
    ngx = nginx(server=SERVER, init_worker=INIT_WORKER, workers=2,
                env={"T_DEPLOY_LIB": str(live)})
    assert ngx.get("/hello").text == "hello, x\n"

    load = Load(ngx, "/hello", 4, 8, lambda r: r.status == 200 and
                r.body in (b"hello, x\n", b"howdy, x\n")).start()
    inode = live.stat().st_ino
    # the recipe: the new build lands under a new inode, then a reload
    new = build_hello(tmp_path / "v2.so", "howdy, ")
    subprocess.run(["install", "-m", "0644", str(new), str(live)],
                   check=True)
    assert live.stat().st_ino != inode
    old = ngx.reload()
    assert wait_reply(ngx, "/hello", "howdy, x\n") == "howdy, x\n"
    ok, failed = load.join()
    assert failed == [] and ok > 0
    Nginx.wait_gone(old)
    balanced(ngx)
