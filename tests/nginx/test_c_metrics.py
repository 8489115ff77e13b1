"""Prometheus metrics (nbffi.metrics, nbffi.metrics_text): summed over
workers through the lua_shared_dict, read back with prometheus_client's
own parser."""

import time

from prometheus_client.parser import text_string_to_metric_families

DICT = "lua_shared_dict nbffi_metrics 1m;"

INIT_WORKER = """
local nbffi = require "resty.nbffi"
assert(nbffi.init())
assert(nbffi.load(os.getenv("NBFFI_ECHO_LIB"), "threads=2",
                  { name = "echo" }))
assert(nbffi.load(os.getenv("NBFFI_ECHO_LIB"), "threads=1",
                  { name = [[we "quote" \\ it]] }))
"""

SERVER = """
location = /call {
    content_by_lua_block {
        local rt = require("echo_rt").rt("threads=2")
        local reply, err = rt:call(ngx.var.arg_m, ngx.var.arg_p or "x",
                                   tonumber(ngx.var.arg_t))
        ngx.say(reply or err)
    }
}
location = /quoted {
    content_by_lua_block {
        local rt = require("echo_rt").rt("threads=1")
        ngx.say(rt:call("echo", "q"))
    }
}
location = /metrics {
    content_by_lua_block {
        require("resty.nbffi").metrics()
    }
}
location = /with-others {
    content_by_lua_block {
        -- what another exporter (nginx-lua-prometheus) prints first
        ngx.print("# HELP other_total Another exporter's.\\n",
                  "# TYPE other_total counter\\n",
                  "other_total 3\\n")
        ngx.print(require("resty.nbffi").metrics_text())
    }
}
"""


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams, family, name, **labels):
    """The value of family's sample name with exactly these labels."""
    for s in fams[family].samples:
        if s.name == name and s.labels == labels:
            return s.value
    return None


def scrape_until(ngx, done):
    """Scrapes until done(families) (the workers flush once a second)."""
    end = time.monotonic() + 10
    while True:
        r = ngx.get("/metrics")
        assert r.status == 200, r.text
        fams = families(r.text)
        if done(fams) or time.monotonic() > end:
            return r, fams
        time.sleep(0.1)


def posted(fams, runtime="echo"):
    if "nbffi_calls_posted" not in fams:
        return 0
    return sample(fams, "nbffi_calls_posted", "nbffi_calls_posted_total",
                  runtime=runtime) or 0


def test_metrics_over_two_workers(echo_nginx, balanced):
    ngx = echo_nginx(http=DICT, server=SERVER, init_worker=INIT_WORKER,
                     workers=2)
    ok = ngx.many(["/call?m=echo&p=hi"] * 200, concurrency=20)
    assert all(r.text == "hi\n" for r in ok)
    err = ngx.many(["/call?m=error&p=bad"] * 10, concurrency=5)
    assert all(r.text == "runtime error 1: bad\n" for r in err)
    slow = ngx.many(["/call?m=sleep&p=300&t=0.05"] * 4, concurrency=4)
    assert all(r.text == "timeout\n" for r in slow)
    total = 214

    r, fams = scrape_until(ngx, lambda f: posted(f) == total and sample(
        f, "nbffi_call_duration_seconds",
        "nbffi_call_duration_seconds_count", runtime="echo") == total)
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4"

    def value(family, name=None, **labels):
        return sample(fams, family, name or family + "_total",
                      runtime="echo", **labels)

    assert value("nbffi_calls_posted") == total
    assert value("nbffi_calls_completed") == 200
    assert value("nbffi_calls_failed") == 10
    assert value("nbffi_calls_timed_out") == 4
    # every counter is there from the runtime's first flush on
    assert value("nbffi_calls_refused") == 0
    assert value("nbffi_calls_abandoned") == 0
    assert value("nbffi_method_calls", method="echo") == 200
    assert value("nbffi_method_calls", method="error") == 10
    assert value("nbffi_method_calls", method="sleep") == 4
    assert value("nbffi_method_errors", method="error") == 10
    assert value("nbffi_method_errors", method="sleep") == 4
    assert fams["nbffi_calls_posted"].type == "counter"

    h = fams["nbffi_call_duration_seconds"]
    assert h.type == "histogram"
    buckets = [(float(s.labels["le"]), s.value) for s in h.samples
               if s.name.endswith("_bucket") and
               s.labels["runtime"] == "echo"]
    bounds = [b for b, _ in buckets]
    assert bounds[0] == 0.00001 and bounds[-2] == 10.0
    assert bounds[-1] == float("inf") and bounds == sorted(bounds)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts) and counts[-1] == total
    # the four timed out calls took 50 ms or more
    assert counts[bounds.index(0.025)] <= total - 4
    assert value("nbffi_call_duration_seconds",
                 "nbffi_call_duration_seconds_sum") >= 4 * 0.05

    fams = scrape_until(ngx, lambda f: sample(
        f, "nbffi_calls_in_flight", "nbffi_calls_in_flight",
        runtime="echo") == 0)[1]
    assert sample(fams, "nbffi_runtime_workers", "nbffi_runtime_workers",
                  runtime="echo", state="ready") == 2
    assert sample(fams, "nbffi_queue_depth", "nbffi_queue_depth",
                  runtime="echo") == 0

    # a label is escaped, and comes back as it was
    assert ngx.get("/quoted").text == "q\n"
    quoted = 'we "quote" \\ it'
    fams = scrape_until(ngx, lambda f: posted(f, quoted) == 1)[1]
    assert posted(fams, quoted) == 1

    # after a reload, counters go on from where they were
    ngx.reload()
    assert ngx.get("/call?m=echo&p=again").text == "again\n"
    fams = scrape_until(ngx, lambda f: posted(f) == total + 1)[1]
    assert posted(fams) == total + 1

    # with another exporter's text before it, still one valid exposition
    fams = families(ngx.get("/with-others").text)
    assert sample(fams, "other", "other_total") == 3
    assert posted(fams) == total + 1
    balanced(ngx)


CLOSE = """
location = /temp {
    content_by_lua_block {
        local rt = assert(require("resty.nbffi").load(
            os.getenv("NBFFI_ECHO_LIB"), "threads=3", { name = "temp" }))
        for _ = 1, 3 do
            assert(rt:call("echo", "x"))
        end
        ngx.say(rt:close())
    }
}
"""


def test_a_closed_runtime_keeps_its_counts(echo_nginx, balanced):
    ngx = echo_nginx(http=DICT, server=SERVER + CLOSE)
    assert ngx.get("/temp").text == "true\n"

    def gone(fams):
        workers = fams.get("nbffi_runtime_workers")
        states = [s for s in (workers.samples if workers else [])
                  if s.labels["runtime"] == "temp"]
        return posted(fams, "temp") == 3 and not states

    fams = scrape_until(ngx, gone)[1]
    # its last counts were flushed after it was freed; its gauges left
    assert posted(fams, "temp") == 3
    assert sample(fams, "nbffi_calls_completed",
                  "nbffi_calls_completed_total", runtime="temp") == 3
    assert gone(fams)
    balanced(ngx, workers=1)


def test_no_dict_no_metrics(echo_nginx, balanced):
    ngx = echo_nginx(server=SERVER)
    assert ngx.get("/call?m=echo&p=hi").text == "hi\n"
    r = ngx.get("/metrics")
    assert (r.status, r.text) == (
        500, "nbffi.metrics: no lua_shared_dict nbffi_metrics in"
             " nginx.conf\n")
    balanced(ngx, workers=1)
