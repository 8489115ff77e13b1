"""docs/runtime-java.md, section 4: its Feed.java handler compiled against
the nbffi jar and its two Lua blocks run in nginx as written: a stream
relayed chunk by chunk, the request id in the handler's log line, an
event that updates a shared dict."""

import re
import subprocess
import sys
import time

import pytest

from harness import REPO
from javahelp import JNI_TROUBLE, java_lib  # noqa: F401

sys.path.insert(0, str(REPO / "tests" / "docs"))
from docblocks import doc_block  # noqa: E402


@pytest.fixture
def feed_nginx(nginx, java_lib, tmp_path):
    src = tmp_path / "src" / "demo"
    src.mkdir(parents=True)
    (src / "Feed.java").write_text(doc_block("runtime-java.md", "Feed.java"))
    out = tmp_path / "classes"
    r = subprocess.run(["javac", "-Xlint:all", "-Werror", "--release", "17",
                        "-cp", str(java_lib.with_name("nbffi.jar")),
                        "-d", str(out), str(src / "Feed.java")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = f"class=demo.Feed\nclasspath={out}\njvm_option=-Xcheck:jni\n"
    init = doc_block("runtime-java.md", "init_worker: load Feed")
    content = doc_block("runtime-java.md", "content: relay the stream")
    server = f"""
location = /count {{
    content_by_lua_block {{
{content}
    }}
}}
location = /reload {{
    content_by_lua_block {{ ngx.print(FEED:call("reload", "v2")) }}
}}
location = /version {{
    content_by_lua_block {{ ngx.print(ngx.shared.feed:get("version")) }}
}}
"""
    ngx = nginx(http="lua_shared_dict feed 1m;", server=server,
                init_worker=init, log_level="info",
                env={"NBFFI_JAVA_LIB": str(java_lib), "FEED_CFG": cfg})
    yield ngx
    ngx.quit()
    ngx.assert_no_log(JNI_TROUBLE)


def test_feed_streams_logs_and_emits(feed_nginx, balanced):
    ngx = feed_nginx
    r = ngx.get("/count?n=3")
    assert r.text == "line 1\nline 2\nline 3\n"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    (line,) = ngx.wait_log(r"count 3 for tenant acme")
    assert re.search(r"request_id.*[0-9a-f]{32}", line), line

    assert ngx.get("/reload").text == "true"
    # the event's handler runs in a timer of the worker
    end = time.monotonic() + 10
    while ngx.get("/version").text != "v2":
        assert time.monotonic() < end, "the event never updated the dict"
        time.sleep(0.01)
    balanced(ngx, workers=1)
