"""Go cannot unload a runtime, and a process keeps the first Go library it
loaded: new Go code takes docs/operations.md's deploy recipe (a new file
under the name, then a reload).  Under load, the reply changes and no
request fails."""

import subprocess

from gohelp import go_build
from harness import DEPLOY_SERVER, Load, Nginx, wait_reply

INIT_WORKER = """
local nbffi = require "resty.nbffi"
assert(nbffi.init())
nbffi.load(os.getenv("T_DEPLOY_LIB"), "", { name = "golife" })
"""


def test_install_then_reload_under_load(nginx, nbffi_build, tmp_path,
                                        balanced):
    def build(version):
        return go_build("tests/nginx/go", ".", tmp_path / f"{version}.so",
                        True, nbffi_build / "core",
                        ldflags=f"-X main.greeting={version}")

    live = tmp_path / "lib" / "libgolife.so"
    live.parent.mkdir()
    subprocess.run(["install", "-m", "0644", str(build("v1")), str(live)],
                   check=True)
    ngx = nginx(server=DEPLOY_SERVER, init_worker=INIT_WORKER, workers=2,
                env={"T_DEPLOY_LIB": str(live)})
    assert ngx.get("/hello").text == "v1:x"

    load = Load(ngx, "/hello", 4, 8, lambda r: r.status == 200 and
                r.body in (b"v1:x", b"v2:x")).start()
    subprocess.run(["install", "-m", "0644", str(build("v2")), str(live)],
                   check=True)
    old = ngx.reload()
    assert wait_reply(ngx, "/hello", "v2:x") == "v2:x"
    ok, failed = load.join()
    assert failed == [] and ok > 0
    Nginx.wait_gone(old)
    balanced(ngx)
