"""examples/java-pool: a JVM-side HttpClient keep-alive pool to an upstream
server block of the same nginx; 1,000 requests use no more upstream
connections than the pool allows; an upstream body streamed to the client
line by line as the handler reads it."""

import re
import socket
import subprocess

import pytest

from harness import REPO, free_port
from javahelp import JNI_TROUBLE, assert_masks, java_lib  # noqa: F401

EXAMPLE = REPO / "examples" / "java-pool"
CONNECTIONS = 4
BIG = "big.txt"     # the upstream's /big, in the prefix


@pytest.fixture(scope="session")
def pool_classes(java_lib, tmp_path_factory):
    # as the example's README does: against the jar next to the library
    out = tmp_path_factory.mktemp("java-pool")
    r = subprocess.run(["javac", "-Xlint:all", "-Werror", "--release", "17",
                        "-cp", str(java_lib.with_name("nbffi.jar")),
                        "-d", str(out),
                        str(EXAMPLE / "PoolHandler.java")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("javac PoolHandler.java failed:\n" + r.stderr)
    return out


@pytest.fixture
def pool_nginx(nginx, java_lib, pool_classes):
    def start(upstream):
        cfg = "\n".join([
            "class=example.pool.PoolHandler",
            f"classpath={pool_classes}",
            "jvm_option=-Xcheck:jni",
            f"arg.upstream=http://127.0.0.1:{upstream}",
            f"arg.connections={CONNECTIONS}",
            "threads=4"])
        http = f"""
    log_format upstream '$connection $connection_requests';
    lua_shared_dict drip 1m;
    server {{
        listen 127.0.0.1:{upstream};
        access_log logs/upstream.log upstream;
        keepalive_requests 100000;
        location /item {{
            return 200 "item $arg_id";
        }}
        location = /big {{
            alias {BIG};
        }}
        # "line 1", then the rest once /release was asked for
        location = /drip {{
            content_by_lua_block {{
                ngx.say("line 1")
                ngx.flush(true)
                local drip = ngx.shared.drip
                while not drip:get("go") do
                    ngx.sleep(0.01)
                end
                for i = 2, tonumber(ngx.var.arg_n or 3) do
                    ngx.say("line ", i)
                    if i % 100 == 0 and not ngx.flush(true) then
                        return
                    end
                end
            }}
        }}
        location / {{
            return 404;
        }}
    }}
"""
        server = f"""include {EXAMPLE / 'locations.conf'};
    location = /release {{
        content_by_lua_block {{ ngx.shared.drip:set("go", true) }}
    }}
"""
        ngx = nginx(http=http, server=server,
                    init_worker='require("pool").init('
                    'os.getenv("NBFFI_JAVA_LIB"), os.getenv("POOL_CFG"))',
                    env={"NBFFI_JAVA_LIB": str(java_lib), "POOL_CFG": cfg},
                    lua_path=[EXAMPLE / "?.lua"], log_level="info")
        (ngx.prefix / BIG).write_text("".join(
            f"line {i} of the big body\n" for i in range(1, 2001)))
        return ngx
    return start


def test_pool_reuses_its_connections(pool_nginx, balanced):
    ngx = pool_nginx(free_port())
    n = 1000
    rs = ngx.many([f"/fetch?path=/item%3Fid%3D{i}" for i in range(n)],
                  concurrency=32)
    for i, r in enumerate(rs):
        assert not isinstance(r, Exception), r
        assert (r.status, r.text) == (200, f"item {i}")

    (pid,) = ngx.worker_pids()
    assert_masks(pid)       # HttpClient's threads too

    balanced(ngx, workers=1)
    log = (ngx.prefix / "logs" / "upstream.log").read_text().splitlines()
    assert len(log) == n
    seen = {}
    for line in log:
        conn, requests = map(int, line.split())
        seen[conn] = max(seen.get(conn, 0), requests)
    assert 1 <= len(seen) <= CONNECTIONS, seen
    assert sum(seen.values()) == n      # each connection's last count
    ngx.assert_no_log(JNI_TROUBLE)


def test_upstream_errors_map_to_http(pool_nginx):
    ngx = pool_nginx(free_port())
    r = ngx.get("/fetch?path=/missing")
    assert (r.status, r.text) == (404, "runtime error 404: upstream answered"
                                       " 404\n")
    r = ngx.get("/fetch?path=nope")
    assert r.status == 400 and "path must start with '/'" in r.text
    assert ngx.get("/fetch?path=/item%3Fid%3D7").text == "item 7"


def test_lines_stream_the_body_line_by_line(pool_nginx, balanced):
    ngx = pool_nginx(free_port())
    r = ngx.get("/lines?path=/big")
    assert r.status == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert r.text == (ngx.prefix / BIG).read_text()
    # the handler's log lines carry the caller's request id
    (line,) = ngx.wait_log(r"lines: streaming /big")
    assert re.search(r"request_id.*[0-9a-f]{32}", line), line
    ngx.wait_log(r"lines: 2000 line\(s\) sent")
    r = ngx.get("/lines?path=/missing")
    assert (r.status, r.text) == (404, "runtime error 404: upstream"
                                       " answered 404\n")
    balanced(ngx, workers=1)


def read_until(s, want):
    got = b""
    while want not in got:
        data = s.recv(65536)
        assert data, got
        got += data
    return got


def test_lines_first_line_before_the_body_ends(pool_nginx, balanced):
    ngx = pool_nginx(free_port())
    s = socket.create_connection(("127.0.0.1", ngx.port), 10)
    s.sendall(b"GET /lines?path=/drip HTTP/1.1\r\nHost: x\r\n\r\n")
    # the upstream holds the rest of its body until /release
    assert b"line 1\n" in read_until(s, b"line 1\n")
    assert ngx.get("/release").status == 200
    assert b"line 3\n" in read_until(s, b"line 3\n")
    s.close()
    balanced(ngx, workers=1)


def test_lines_client_abort_cancels_the_stream(pool_nginx, balanced):
    ngx = pool_nginx(free_port())
    s = socket.create_connection(("127.0.0.1", ngx.port), 10)
    s.sendall(b"GET /lines?path=/drip%3Fn%3D100000 HTTP/1.1\r\n"
              b"Host: x\r\n\r\n")
    read_until(s, b"line 1\n")
    s.close()
    ngx.get("/release")
    # the next flush fails; the loop gives the stream up; the sink's
    # send throws and the handler closes the upstream body
    ngx.wait_log(r"lines: reader gone after \d+ line\(s\): the caller"
                 r" gave up")
    assert ngx.get("/fetch?path=/item%3Fid%3D7").text == "item 7"
    balanced(ngx, workers=1)
