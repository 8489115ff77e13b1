"""New Java code without a reload: rt:close() then nbffi.load of the same
(lib, cfg) starts a runtime with a class loader of its own, which reads
the jar installed meanwhile under a new inode; under load, no request
fails (docs/operations.md)."""

import subprocess
import sys

from harness import DEPLOY_SERVER, REDEPLOY, REPO, Load
from javahelp import java_jar, java_lib  # noqa: F401

sys.path.insert(0, str(REPO / "tests" / "docs"))
from docblocks import doc_block  # noqa: E402

SERVER = DEPLOY_SERVER + REDEPLOY % doc_block(
    "operations.md", "in a location or timer of each worker")

GREETER = """
package deploy;

import io.nbffi.Handler;
import io.nbffi.Methods;

public final class Greeter implements Handler {
    @Override
    public void register(Methods m) {
        m.sync("hello", req -> "%s:x".getBytes());
    }
}
"""


def build_jar(tmp_path, version, jar):
    """deploy.Greeter replying "<version>:x", in its own jar."""
    src = tmp_path / version / "deploy" / "Greeter.java"
    src.parent.mkdir(parents=True)
    src.write_text(GREETER % version)
    classes = tmp_path / version / "classes"
    subprocess.run(["javac", "--release", "17", "-cp", str(jar), "-d",
                    str(classes), str(src)], check=True)
    out = tmp_path / f"{version}.jar"
    subprocess.run(["jar", "cf", str(out), "-C", str(classes), "."],
                   check=True)
    return out


def test_close_and_load_uses_the_new_jar(nginx, java_lib, java_jar,
                                         tmp_path, balanced):
    live = tmp_path / "lib" / "greeter.jar"
    live.parent.mkdir()
    subprocess.run(["install", "-m", "0644",
                    str(build_jar(tmp_path, "v1", java_jar[0])), str(live)],
                   check=True)
    cfg = f"class=deploy.Greeter\nclasspath={live}\n"
    ngx = nginx(server=SERVER,
                init_worker='assert(require("resty.nbffi").init())',
                env={"T_DEPLOY_LIB": str(java_lib), "T_DEPLOY_CFG": cfg})
    assert ngx.get("/hello").text == "v1:x"

    load = Load(ngx, "/hello", 4, 8, lambda r: r.status == 200 and
                r.body in (b"v1:x", b"v2:x")).start()
    new = build_jar(tmp_path, "v2", java_jar[0])
    subprocess.run(["install", "-m", "0644", str(new), str(live)],
                   check=True)
    assert ngx.get("/redeploy").text == "ready"
    assert ngx.get("/hello").text == "v2:x"
    ok, failed = load.join()
    assert failed == [] and ok > 0
    balanced(ngx, workers=1)
