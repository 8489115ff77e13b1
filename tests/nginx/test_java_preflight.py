"""nbffi.preflight with the Java runtime: its check (in the forked child,
without a JVM) fails nginx's start on a cfg whose classpath entries or
JVM are missing; a good cfg passes and the runtime serves."""

import pytest

from harness import Nginx
from javahelp import (java_cfg, java_jar,  # noqa: F401
                      java_lib, java_nginx)

PREFLIGHT = ('assert(require("resty.nbffi").preflight('
             'os.getenv("NBFFI_JAVA_LIB"), os.getenv("NBFFI_JAVA_CFG")))')


def test_a_good_cfg_passes(java_nginx, balanced):
    ngx = java_nginx(init=PREFLIGHT)
    r = ngx.get("/call?m=echo&p=hi")
    assert (r.status, r.text) == (200, "hi")
    balanced(ngx, workers=1)


BAD = [
    (java_cfg(["/nope/handlers.jar"]),
     "classpath entry /nope/handlers.jar: No such file or directory"),
    (java_cfg(["/"], extra="java_home=/nope/jdk"),
     "cannot read the JVM /nope/jdk/lib/server/libjvm.so: No such file or"
     " directory (set java_home= in the cfg, or JAVA_HOME)"),
    ("classpath=/tmp\n", "cfg lacks class=NAME (the handler class)"),
]


@pytest.mark.parametrize("cfg, message", BAD,
                         ids=["classpath", "java_home", "class"])
def test_a_bad_cfg_fails_the_start(java_lib, tmp_path, cfg, message):
    ngx = Nginx(tmp_path / "bad", init=PREFLIGHT,
                env={"NBFFI_JAVA_LIB": str(java_lib),
                     "NBFFI_JAVA_CFG": cfg})
    log = ngx.start_fails()
    assert "nbffi.preflight: runtime init failed: " + message in log, log
