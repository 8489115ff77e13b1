"""examples/java-pool: a JVM-side HttpClient keep-alive pool to an upstream
server block of the same nginx; 1,000 requests use no more upstream
connections than the pool allows."""

import subprocess

import pytest

from harness import REPO, free_port
from javahelp import JNI_TROUBLE, assert_masks, java_lib  # noqa: F401

EXAMPLE = REPO / "examples" / "java-pool"
CONNECTIONS = 4


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
            f"arg.connections={CONNECTIONS}"])
        http = f"""
    log_format upstream '$connection $connection_requests';
    server {{
        listen 127.0.0.1:{upstream};
        access_log logs/upstream.log upstream;
        keepalive_requests 100000;
        location /item {{
            return 200 "item $arg_id";
        }}
        location / {{
            return 404;
        }}
    }}
"""
        return nginx(http=http, server=f"include {EXAMPLE / 'locations.conf'};",
                     init_worker='require("pool").init('
                     'os.getenv("NBFFI_JAVA_LIB"), os.getenv("POOL_CFG"))',
                     env={"NBFFI_JAVA_LIB": str(java_lib), "POOL_CFG": cfg},
                     lua_path=[EXAMPLE / "?.lua"], log_level="info")
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
