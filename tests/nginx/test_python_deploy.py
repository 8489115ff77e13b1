"""New Python code without a reload: rt:close() then nbffi.load of the
same (lib, cfg) starts a runtime that imports the changed handler module
again; under load, no request fails (docs/operations.md)."""

import json
import sys

from harness import DEPLOY_SERVER, REDEPLOY, REPO, Load
from pyhelp import py_lib, py_nginx  # noqa: F401

sys.path.insert(0, str(REPO / "tests" / "docs"))
from docblocks import doc_block  # noqa: E402

SERVER = DEPLOY_SERVER + REDEPLOY % doc_block(
    "operations.md", "in a location or timer of each worker")

V1 = "def hello(payload):\n    return b'v1:' + payload\n"
V2 = "def hello(payload):\n    return b'v2:' + payload\n"


def test_close_and_load_imports_the_new_code(py_nginx, py_lib, tmp_path,
                                             balanced):
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "t_deploy.py").write_text(V1)
    cfg = json.dumps({"handler": "t_deploy", "path": [str(handlers)]})
    ngx = py_nginx(server=SERVER,
                   env={"T_DEPLOY_LIB": str(py_lib), "T_DEPLOY_CFG": cfg})
    assert ngx.get("/hello").text == "v1:x"

    load = Load(ngx, "/hello", 4, 8, lambda r: r.status == 200 and
                r.body in (b"v1:x", b"v2:x")).start()
    # a new file under the name, as a deploy would put it
    tmp = handlers / "t_deploy.py.new"
    tmp.write_text(V2)
    tmp.rename(handlers / "t_deploy.py")
    assert ngx.get("/redeploy").text == "ready"
    assert ngx.get("/hello").text == "v2:x"
    ok, failed = load.join()
    assert failed == [] and ok > 0
    balanced(ngx, workers=1)
