"""Faults of a runtime, in every language: handlers that fail, never
answer, are slow, answer twice or late, an init that fails or hangs, and a
crash of native code.  Each must end in a clear error while the worker
keeps serving (or, for the crash, in a respawned worker that serves)."""

import re
import threading
import time
from urllib.parse import quote

import pytest

from conftest import parse_calls, stats, wait_stat
from harness import Nginx

# Generous: a liveness bound, far above any healthy latency.
LIVE_S = 1.0
# The error of a call whose caller gave up (Lua: nil, "timeout").
TIMEOUT = "err:timeout status=nil"


def error_of(outcome):
    """The Lua error of an "err:<err> status=<n>" outcome."""
    assert outcome.startswith("err:"), outcome
    return outcome[4:].rsplit(" status=", 1)[0]


def test_handler_failing_every_nth_call(fault, fault_nginx, balanced):
    ngx = fault_nginx(log_level="info")
    counts, _ = parse_calls(ngx.get("/calls?m=flaky&p=5&c=100").text)
    assert counts.pop("ok:ok") == 80
    assert sum(counts.values()) == 20
    for outcome in counts:
        assert re.search(fault.flaky_error, error_of(outcome)), outcome
    assert ngx.get("/call?m=echo&p=still+here").body == b"still here"
    balanced(ngx, workers=1)


def test_never_answered_calls_time_out_and_free_on_late_reply(
        fault, fault_nginx, balanced):
    ngx = fault_nginx()
    counts, _ = parse_calls(ngx.get("/calls?m=never&p=x&c=20&t=0.2").text)
    assert counts == {TIMEOUT: 20}
    s = stats(ngx)
    # given up by the callers, still held by the runtime
    assert (s["tasks_live"], s["rt_timed_out"]) == ("20", "20"), s
    assert ngx.get("/call?m=release").status == 200
    wait_stat(ngx, "tasks_live", 0)
    assert ngx.get("/call?m=echo&p=ok").body == b"ok"
    balanced(ngx, workers=1)


def test_never_answered_calls_are_freed_at_close(fault, fault_nginx,
                                                 balanced):
    ngx = fault_nginx()
    counts, _ = parse_calls(ngx.get("/calls?m=never&p=x&c=20&t=0.2").text)
    assert counts == {TIMEOUT: 20}
    assert stats(ngx)["tasks_live"] == "20"
    assert ngx.get("/close").text == "closed\n"
    # the runtime answers what it held when it closes, at the latest when
    # the worker exits; every task is freed by then
    balanced(ngx, workers=1)


def test_slow_handler_fills_the_queue_and_the_loop_stays_live(
        fault, fault_nginx, balanced):
    ngx = fault_nginx(opts="max_queue=4")
    result = {}

    def flood():
        result["r"] = ngx.get("/calls?m=sleep&p=300&c=40&t=30")

    t = threading.Thread(target=flood)
    t.start()
    slowest = 0.0
    while t.is_alive():
        t0 = time.monotonic()
        assert ngx.get("/plain").body == b"plain\n"
        slowest = max(slowest, time.monotonic() - t0)
    t.join()
    assert slowest < LIVE_S, f"/plain took {slowest:.3f} s"

    counts, ms = parse_calls(result["r"].text)
    full = "err:queue full status=nil"
    assert set(counts) <= {"ok:slept", full}, counts
    assert counts["ok:slept"] >= 4, counts
    if fault.bounded:
        assert counts.get(full, 0) >= 1, counts
    if full in counts:
        # refused at once, not after waiting for room
        assert ms[full] < LIVE_S * 1000, ms
    balanced(ngx, workers=1)


def test_init_failure_is_a_clear_error(fault, fault_nginx, balanced):
    ngx = fault_nginx()
    r = ngx.get("/load?cfg=" + quote(fault.fail_cfg))
    assert r.status == 502
    assert r.text.startswith(f"runtime init failed: {fault.lib}: "
                             "init failed: "), r.text
    assert re.search(fault.fail_error, r.text, re.M), r.text
    assert ngx.get("/plain").status == 200
    assert ngx.get("/call?m=echo&p=fine").body == b"fine"
    balanced(ngx, workers=1)


def test_init_hang_fails_the_load_in_bounded_time(fault, fault_nginx,
                                                  balanced):
    # Every start runs on a thread of libnbffi, bounded by load_timeout.
    ngx = fault_nginx(opts="load_timeout=1")
    r = ngx.get("/load?cfg=" + quote(fault.hang_cfg))
    assert (r.status, r.text) == (
        502, f"runtime init failed: {fault.lib}: init did not return "
             "within the start deadline; it is left running\n")
    assert ngx.get("/plain").status == 200
    assert ngx.get("/call?m=echo&p=fine").body == b"fine"
    # the language still starts runtimes after one hung
    assert ngx.get("/load?cfg=" + quote(fault.alt_cfg)).text == "ok"
    # the stuck init does not hold the worker's exit
    balanced(ngx, workers=1)


def test_crash_in_native_code_respawns_the_worker(fault, fault_nginx,
                                                  balanced):
    # The runtime is loaded on first use, not in init_worker.
    ngx = fault_nginx(init_worker='assert(require("resty.nbffi").init())',
                      main="worker_rlimit_core 0;")
    ngx.allow(fault.crash_log)
    assert ngx.get("/call?m=echo&p=before").body == b"before"
    [pid] = ngx.worker_pids()
    with pytest.raises(Exception):
        ngx.get("/call?m=crash&p=0")
    ngx.wait_log(rf"worker process {pid} {fault.crash_log}", timeout=60)
    Nginx.wait_gone([pid])
    assert ngx.get("/call?m=echo&p=after").body == b"after"
    [new] = ngx.worker_pids()
    assert new != pid
    balanced(ngx, workers=1)


def test_answering_twice_is_detected(fault, fault_nginx, balanced):
    if not fault.twice_guarded:
        pytest.skip(f"{fault.lang}: a handler cannot answer twice through "
                    "this shim's API (see docs/reliability.md)")
    ngx = fault_nginx()
    r = ngx.get("/call?m=twice&p=x")
    assert (r.status, r.body) == (200, b"first")
    ngx.wait_log(r"task already answered")
    assert ngx.get("/call?m=echo&p=served").body == b"served"
    balanced(ngx, workers=1)


def test_answering_twice_loses_no_other_call(fault, fault_nginx, balanced):
    if not fault.twice_guarded:
        pytest.skip(f"{fault.lang}: a handler cannot answer twice through "
                    "this shim's API (see docs/reliability.md)")
    ngx = fault_nginx()
    counts, _ = parse_calls(ngx.get("/calls?m=twice&p=x&c=20&t=3").text)
    assert counts == {"ok:first": 20}, counts
    balanced(ngx, workers=1)


def test_touching_an_answered_task_is_refused(fault, fault_nginx,
                                             balanced):
    # A handler keeps the task of a "never" call; the shim answers it (at
    # close, or when "release" lets the call return), then "late" touches
    # it again, from a new runtime when the old one was closed.
    if fault.late_reply is None:
        pytest.skip(f"{fault.lang}: a handler cannot touch a task after "
                    "its answer through this shim's API (see "
                    "docs/reliability.md)")
    ngx = fault_nginx()
    r = ngx.get("/call?m=never&p=x&t=0.2")
    assert (r.status, r.text) == (502, "timeout\n")
    ngx.get("/close" if fault.answers_at_close else "/call?m=release")
    wait_stat(ngx, "tasks_live", 0)
    r = ngx.get("/call?m=late")
    assert re.search(fault.late_reply, r.text), r.text
    assert ngx.get("/call?m=echo&p=served").body == b"served"
    balanced(ngx, workers=1)
