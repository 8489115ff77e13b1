"""docs/operations.md: its nginx.conf serves readiness and metrics as the
doc says, the metrics parse with prometheus_client's parser, and its
nginx-lua-prometheus lines make one valid exposition."""

import time

from prometheus_client.parser import text_string_to_metric_families

from docblocks import (REPO, DocNginx, doc_block, doc_block_after,
                       expected_requests, running)


def calls(text, runtime="echo"):
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "nbffi_calls_posted_total" and \
                    s.labels == {"runtime": runtime}:
                return s.value
    return 0


def scrape_calls(ngx, want):
    """The echo runtime's posted calls, once the worker flushed them."""
    end = time.monotonic() + 10
    while True:
        r = ngx.get("/metrics")
        assert r.status == 200, r.text
        n = calls(r.text)
        if n >= want or time.monotonic() > end:
            return r, n
        time.sleep(0.1)


def test_operations_nginx_conf(tmp_path, nbffi_build):
    block = doc_block_after("operations.md", "load_module")
    wants = expected_requests(block.after)
    assert [p for p, _ in wants] == ["/upper", "/ready"]
    with running(DocNginx(tmp_path / "ops", block.text)) as ngx:
        for path, want in wants:
            r = ngx.get(path)
            assert (r.status, r.text) == (200, want + "\n"), (path, r.text)
        r, n = scrape_calls(ngx, 1)
        assert n == 1
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4"
        names = {f.name for f in text_string_to_metric_families(r.text)}
        # every family of the doc's table
        table = doc_block_after("operations.md", "# HELP").after
        for name in names:
            assert f"`{name}" in table, name


COLLECT = """
location = /metrics {
    content_by_lua_block {
        -- stands for nginx-lua-prometheus: what its collect() prints
        local prometheus = {
            collect = function()
                ngx.header["Content-Type"] = "text/plain"
                ngx.print("# HELP nginx_http_requests_total Requests.\\n",
                          "# TYPE nginx_http_requests_total counter\\n",
                          'nginx_http_requests_total{host="x"} 7\\n')
            end,
        }
%s
    }
}
location = /call {
    content_by_lua_block {
        ngx.say(require("echo_rt").rt():call("echo", "x"))
    }
}
"""


def test_with_nginx_lua_prometheus(echo_nginx, balanced):
    lines = doc_block("operations.md", "prometheus:collect()")
    ngx = echo_nginx(http="lua_shared_dict nbffi_metrics 1m;",
                     server=COLLECT % lines)
    assert ngx.get("/call").text == "x\n"
    end = time.monotonic() + 10
    while True:
        text = ngx.get("/metrics").text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        if fams.get("nbffi_calls_posted") or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert fams["nginx_http_requests"].samples[0].value == 7
    assert calls(text, runtime=fams["nbffi_calls_posted"].samples[0]
                 .labels["runtime"]) == 1
    balanced(ngx, workers=1)


UPPER = """
location = /upper {
    content_by_lua_block {
        ngx.say(require("echo_rt").rt("threads=2"):call("upper", "hi"))
    }
}
"""


def test_preflight_snippet(echo_nginx, balanced):
    """The doc's preflight passes for a library that loads (the failures
    are tests/nginx/test_c_preflight.py's)."""
    init = (doc_block("operations.md", "in init_by_lua_block")
            .replace("/path/to/nbffi", str(REPO))
            .replace('"www-data"', '"root"'))     # the tests' own files
    ngx = echo_nginx(init=init, server=UPPER)
    assert ngx.get("/upper").text == "HI\n"
    balanced(ngx, workers=1)
