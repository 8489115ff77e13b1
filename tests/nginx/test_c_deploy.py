"""docs/operations.md's deploy recipe with a C runtime: a new library
installed under a new inode, then a reload, under load: the reply changes
and no request fails."""

import subprocess
import sys

from harness import (DEPLOY_SERVER, REPO, Load, Nginx, build_dir,
                     wait_reply)

sys.path.insert(0, str(REPO / "tests" / "docs"))
from docblocks import doc_block  # noqa: E402

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


def test_install_then_reload_under_load(nginx, tmp_path, balanced):
    recipe = doc_block("operations.md", "build the new library")
    assert "install -m 0644 " in recipe and "nginx -s reload" in recipe
    live = tmp_path / "lib" / "libhello.so"
    live.parent.mkdir()
    subprocess.run(["install", "-m", "0644",
                    str(build_hello(tmp_path / "v1.so", "hello, ")),
                    str(live)], check=True)
    ngx = nginx(server=DEPLOY_SERVER, init_worker=INIT_WORKER, workers=2,
                env={"T_DEPLOY_LIB": str(live)})
    assert ngx.get("/hello").text == "hello, x"

    load = Load(ngx, "/hello", 4, 8, lambda r: r.status == 200 and
                r.body in (b"hello, x", b"howdy, x")).start()
    inode = live.stat().st_ino
    # the recipe: the new build lands under a new inode, then a reload
    new = build_hello(tmp_path / "v2.so", "howdy, ")
    subprocess.run(["install", "-m", "0644", str(new), str(live)],
                   check=True)
    assert live.stat().st_ino != inode
    old = ngx.reload()
    assert wait_reply(ngx, "/hello", "howdy, x") == "howdy, x"
    ok, failed = load.join()
    assert failed == [] and ok > 0
    Nginx.wait_gone(old)
    balanced(ngx)
