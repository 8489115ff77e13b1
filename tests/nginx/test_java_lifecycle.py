"""The Java runtime in an nginx worker's life: bad loads, a bad first load
then a good one, a second runtime in the same JVM, nginx's signals with a
JVM loaded (masks, reload, reopen, quit with calls in flight, a handler
that never returns), virtual threads on a newer JDK."""

import os
import signal
import subprocess
import threading
import time

import pytest

from harness import NGINX, Load, Nginx
from javahelp import (CALL, JAR, TEST_CLASSES, assert_masks,  # noqa: F401
                      blocked_signals, java_jar, java_lib, java_nginx,
                      jvm_threads, newer_jdk)

# POST /load: loads a runtime with the request body as its cfg, then calls
# ?m= (default "java") on it.
LOAD = CALL + """
location = /load {
    content_by_lua_block {
        ngx.req.read_body()
        local nbffi = require "resty.nbffi"
        local rt, err = nbffi.load(os.getenv("NBFFI_JAVA_LIB"),
                                   ngx.req.get_body_data())
        if not rt then
            ngx.status = 500
            ngx.print(err)
            return
        end
        local reply
        reply, err = rt:call(ngx.var.arg_m or "java", ngx.var.arg_p or "")
        ngx.print(reply or err)
    }
}
location = /mark {
    content_by_lua_block {
        ngx.log(ngx.NOTICE, "mark ", ngx.var.arg_m)
    }
}
"""


def cfg(handler, *lines, classpath=TEST_CLASSES):
    return "\n".join([f"class={handler}", f"classpath={classpath}",
                      *lines]) + "\n"


def test_load_errors_leave_the_worker_serving(java_nginx):
    ngx = java_nginx(server=LOAD)
    (pid,) = ngx.worker_pids()
    cases = [
        (cfg("io.nbffi.it.Nope"),
         "nbffi_java: handler class 'io.nbffi.it.Nope' not found"
         f" (classpath: {TEST_CLASSES})"),
        (cfg("io.nbffi.it.NotAHandler"),
         "class 'io.nbffi.it.NotAHandler' does not implement"
         " io.nbffi.Handler"),
        (cfg("io.nbffi.it.FailingHandler"),
         "io.nbffi.it.FailingHandler.register failed: java.lang."
         "IllegalArgumentException: arg.required is missing"),
        (cfg("io.nbffi.it.TestHandler", "threads=many"),
         "cfg line 3: threads must be an integer in 1..64, got 'many'"),
        (cfg("io.nbffi.it.TestHandler", "colour=blue"),
         "cfg line 3: unknown key 'colour'"),
        (cfg("io.nbffi.it.TestHandler", "executor=virtual"),
         "executor=virtual needs Java 21 or later; this JVM is 17"),
        ("classpath=/x\n", "cfg lacks class=NAME"),
    ]
    for body, want in cases:
        r = ngx.request("/load", method="POST", body=body)
        assert r.status == 500 and r.text.startswith("runtime init failed: ")
        assert want in r.text, (body, r.text)
    r = ngx.request("/call?m=echo", method="POST", body=b"still serving")
    assert (r.status, r.body) == (200, b"still serving")
    assert ngx.worker_pids() == [pid]


def test_bad_first_load_then_a_good_one(java_nginx, balanced):
    # The worker's first Java load creates the JVM and fails on its
    # classpath (the old trap: only the nbffi jar, not the handler); the
    # JVM it leaves serves the next, right, load.
    ngx = java_nginx(server=LOAD,
                     init_worker='assert(require("resty.nbffi").init())')
    (pid,) = ngx.worker_pids()
    assert "VM Thread" not in jvm_threads(pid)
    for classpath, want in [
            (JAR, "handler class 'io.nbffi.it.TestHandler' not found"),
            ("/nonexistent", "classpath entry '/nonexistent' does not"
             " exist")]:
        r = ngx.request("/load", method="POST",
                        body=cfg("io.nbffi.it.TestHandler",
                                 "jvm_option=-Xcheck:jni",
                                 classpath=classpath))
        assert r.status == 500, r.text
        assert r.text.startswith("runtime init failed: ") and want in r.text
        assert jvm_threads(pid).count("VM Thread") == 1
    r = ngx.request("/load?m=echo&p=served", method="POST",
                    body=cfg("io.nbffi.it.TestHandler"))
    assert (r.status, r.text) == (200, "served")
    assert ngx.worker_pids() == [pid]
    balanced(ngx, workers=1)


def test_second_runtime_reuses_the_jvm(java_nginx, balanced):
    ngx = java_nginx(server=LOAD)
    # a classpath that lists the nbffi jar too is fine
    second = cfg("io.nbffi.it.TestHandler", "threads=1", "arg.who=second",
                 "jvm_option=-Xmx64m", classpath=f"{JAR}:{TEST_CLASSES}")
    r = ngx.request("/load?m=config&p=who", method="POST", body=second)
    assert (r.status, r.text) == (200, "second")
    # separate handler instances, one JVM
    for n in ("1", "2"):
        assert ngx.request("/load?m=count", method="POST",
                           body=second).text == n
    assert ngx.get("/call?m=count").text == "1"
    (pid,) = ngx.worker_pids()
    threads = jvm_threads(pid)
    assert threads.count("VM Thread") == 1
    assert threads.count("nbffi-poller-0") == 2     # one per runtime
    ngx.wait_log(r"\[warn\] .*the JVM is already running: java_home and"
                 r" jvm_option of io.nbffi.it.TestHandler are ignored")
    balanced(ngx, workers=1)


def test_jvm_threads_block_nginx_signals(java_nginx):
    ngx = java_nginx()
    # async methods start JDK threads (delayed executor) from pollers
    for m in ("echo", "async_echo", "async_throw", "log"):
        assert ngx.get(f"/call?m={m}&p=1").status in (200, 500)
    (pid,) = ngx.worker_pids()
    threads = blocked_signals(pid)
    names = {n for n, _ in threads.values()}
    assert {"VM Thread", "nbffi-poller-0", "nbffi-poller-1"} <= names
    assert_masks(pid, threads)


def nginx_s(ngx, sig):
    """Runs `nginx -s sig` against ngx, as an operator would."""
    subprocess.run([NGINX, "-p", str(ngx.prefix), "-c",
                    str(ngx.prefix / "conf" / "nginx.conf"), "-s", sig],
                   check=True, capture_output=True, timeout=30,
                   env={**ngx.env, "PATH": "/usr/sbin:/usr/bin:/bin"})


def new_worker(ngx, old, timeout=10):
    """The one worker not in old (a worker just forked still carries the
    master's process title for a moment)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = [p for p in ngx.worker_pids() if p not in old]
        if pids:
            return pids[0]
        time.sleep(0.01)
    raise AssertionError("no new worker")


def test_reload_under_load_with_a_jvm(java_nginx, balanced):
    # NBFFI_RELOAD_SECONDS: how long the clients run (default 6).
    seconds = float(os.environ.get("NBFFI_RELOAD_SECONDS", "6"))
    ngx = java_nginx(cfg="threads=4\n", workers=2, log_level="info")
    fast = Load(ngx, "/call?m=echo&p=fast", seconds, 8,
                lambda r: (r.status, r.body) == (200, b"fast"))
    # calls in flight when the HUPs come
    slow = Load(ngx, "/call?m=async_sleep&p=50", seconds, 6,
                lambda r: (r.status, r.body) == (200, b"slept"))
    fast.start()
    slow.start()
    for _ in range(2):
        time.sleep(seconds / 3)     # the client's schedule, not a sync
        Nginx.wait_gone(ngx.reload(), timeout=15)
    ok_fast, failed_fast = fast.join()
    ok_slow, failed_slow = slow.join()
    assert failed_fast == [] and failed_slow == []
    assert ok_fast > 0 and ok_slow > 0
    # three generations of two workers, each balanced at exit
    balanced(ngx, workers=6)


def test_reopen_and_reload_by_operator(java_nginx):
    ngx = java_nginx(server=LOAD)
    old = ngx.worker_pids()
    nginx_s(ngx, "reload")
    ngx.wait_log(r"signal 1 \(SIGHUP\) received")
    Nginx.wait_gone(old)
    new = new_worker(ngx, old)
    assert ngx.get("/call?m=echo&p=again").text == "again"

    log = ngx.prefix / "logs" / "error.log"
    log.rename(log.with_suffix(".old"))
    nginx_s(ngx, "reopen")
    # the worker writes to the new file once it has reopened it (USR1
    # reached its event loop, not a JVM thread)
    for i in range(200):
        ngx.get(f"/mark?m={i}")
        if log.exists() and f"{new}#{new}: *" in log.read_text() \
                and "mark" in log.read_text():
            break
    else:
        pytest.fail("the worker never wrote to the reopened error log")
    assert ngx.get("/call?m=echo&p=reopened").text == "reopened"


def test_quit_lets_java_calls_in_flight_finish(java_nginx, balanced):
    ngx = java_nginx(server=CALL.replace(
        "content_by_lua_block {",
        'content_by_lua_block {\n ngx.log(ngx.NOTICE, "calling ",'
        ' ngx.var.arg_m)'))
    results = {}

    def client(m):
        results[m] = ngx.request(f"/call?m={m}&p=300")

    threads = [threading.Thread(target=client, args=(m,))
               for m in ("sleep", "async_sleep")]
    for t in threads:
        t.start()
    ngx.wait_log("calling async_sleep")
    ngx.wait_log("calling sleep")
    ngx.proc.send_signal(signal.SIGQUIT)
    for t in threads:
        t.join()
    for m in ("sleep", "async_sleep"):
        assert (results[m].status, results[m].text) == (200, "slept"), m
    balanced(ngx, workers=1)


def test_quit_with_a_held_call_answers_it_after_close_timeout(java_nginx,
                                                             balanced):
    # The handler never completes "hold"; the caller times out, the worker
    # exits, and closing the runtime answers the call after close_timeout
    # (no handler holds its payload view, so close may).
    ngx = java_nginx(cfg="close_timeout=300\n")
    r = ngx.get("/call?m=hold&t=0.2")
    assert (r.status, r.text) == (500, "timeout")
    ngx.proc.send_signal(signal.SIGQUIT)
    [(allocated, freed, leaked, live)] = balanced(ngx, workers=1)
    assert allocated == 2       # the runtime's load task and the call
    ngx.assert_log(r"\[warn\] .*runtime closed before the handler answered"
                   r" \(waited 300 ms\); 1 call\(s\) answered with an"
                   r" error")
    ngx.assert_no_log(r"orphaned")


def test_reload_with_a_handler_that_never_returns(java_nginx, balanced):
    # A sync method that ignores interruption and does not return for
    # days holds a poller when HUP comes: the old worker still leaves
    # within worker_shutdown_timeout + 1 s, its runtime orphaned; then
    # QUIT stops nginx.
    ngx = java_nginx(main="worker_shutdown_timeout 3s;")
    result = {}

    def client():
        try:
            result["r"] = ngx.request("/call?m=stubborn&p=1000000000&t=600",
                                      timeout=60)
        except Exception as e:      # nginx drops it at the shutdown timeout
            result["r"] = e

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log("stubborn: pausing 1000000000 ms")
    start = time.monotonic()
    old = ngx.reload()
    Nginx.wait_gone(old, timeout=15)
    seconds = time.monotonic() - start
    print(f"HUP to old worker exit, a Java handler that never returns:"
          f" {seconds:.2f} s (worker_shutdown_timeout 3s)")
    t.join()
    # nginx closed the connection at its shutdown timeout, not the client
    assert not isinstance(result["r"], TimeoutError), result["r"]
    # (why: fini reports the poller that stayed; on a loaded machine fini
    # itself may overrun the deadline first)
    ngx.assert_log(r"\[error\] .*nbffi: runtime \S*libnbffi_java\.so"
                   r" orphaned: ")
    # the new worker serves; QUIT ends nginx
    assert ngx.get("/call?m=echo&p=new").text == "new"
    counters = balanced(ngx, workers=2, leaked=True)
    # no view of its payload was taken: close answered the call, so nbffi
    # had to keep no task's memory
    assert [c[2] for c in counters] == [0, 0], counters


def test_reload_with_a_handler_that_never_returns_and_no_caller(
        java_nginx, balanced):
    # The caller gave up long ago, the poller is still stuck: no request
    # holds the old worker, so its runtime gets the whole
    # worker_shutdown_timeout, then is orphaned.
    ngx = java_nginx(main="worker_shutdown_timeout 2s;")
    assert ngx.get("/call?m=stubborn&p=1000000000&t=0.1").text == "timeout"
    start = time.monotonic()
    Nginx.wait_gone(ngx.reload(), timeout=15)
    seconds = time.monotonic() - start
    print(f"HUP to old worker exit, a stuck Java handler, no caller:"
          f" {seconds:.2f} s (worker_shutdown_timeout 2s)")
    ngx.assert_log(r"\[error\] .*nbffi: runtime \S*libnbffi_java\.so"
                   r" orphaned: ")
    balanced(ngx, workers=2)


def test_virtual_threads_on_a_newer_jdk(java_nginx, balanced):
    jdk = newer_jdk()
    if jdk is None:
        pytest.skip("no JDK 21+ under /usr/lib/jvm or /opt")
    ngx = java_nginx(cfg=f"java_home={jdk}\nexecutor=virtual\n")
    assert ngx.get("/call?m=thread").text.endswith(" virtual")
    assert not ngx.get("/call?m=java").text.startswith("17")
    # blocking calls overlap on virtual threads (one poller thread)
    rs = ngx.many(["/call?m=sleep&p=200"] * 100, concurrency=100)
    assert all(not isinstance(r, Exception) and r.text == "slept"
               for r in rs)
    r = ngx.get("/call?m=throw&p=v")
    assert r.status == 500 and "IllegalStateException: v" in r.text
    balanced(ngx, workers=1)
