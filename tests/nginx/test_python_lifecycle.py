"""The Python runtime in an nginx worker's life: a handler that never
returns does not keep an old worker alive past worker_shutdown_timeout,
and an async handler whose caller gave up is cancelled."""

import socket
import threading
import time

import pytest

from harness import Nginx
from pyhelp import py, py_nginx  # noqa: F401

SHUTDOWN = 3                    # s, worker_shutdown_timeout

# The call never answers: it is stopped at worker exit, interrupted
# (spin), cancelled (asyncio; its caller went away when nginx closed the
# connection) or left to an orphaned runtime (sleep: blocked in C code).
NEVER = [
    ("stuck", "spin", r"t_stuck: spin: started", False),
    ("stuck", "sleep", r"t_stuck: sleep: started", True),
    ("async", "forever", r"t_async: forever: started", False),
]


@pytest.mark.parametrize("rt, method, started, orphaned", NEVER,
                         ids=[n[1] for n in NEVER])
def test_reload_with_a_handler_that_never_returns(py_nginx, balanced, rt,
                                                  method, started, orphaned):
    ngx = py_nginx(main=f"worker_shutdown_timeout {SHUTDOWN}s;")
    (old,) = ngx.worker_pids()
    gone = []

    def client():
        try:
            ngx.request(f"/py?rt={rt}&m={method}", timeout=SHUTDOWN + 30)
        except OSError as exc:      # nginx closes it at the timeout
            gone.append(exc)

    t = threading.Thread(target=client)
    t.start()
    ngx.wait_log(started)

    hup = time.monotonic()
    ngx.reload()
    Nginx.wait_gone([old], timeout=SHUTDOWN + 10)
    took = time.monotonic() - hup
    print(f"\n{method}: old worker gone {took:.2f} s after HUP "
          f"(worker_shutdown_timeout {SHUTDOWN} s)")
    t.join()
    assert len(gone) == 1

    if orphaned:
        ngx.assert_log(r"\[error\] .*runtime .*libnbffi_python\.so orphaned: "
                       r"fini reported 1 thread\(s\) still running")
    else:
        ngx.assert_no_log("orphaned")
    # the new worker serves; QUIT stops nginx
    assert py(ngx, "echo", b"after").body == b"after"
    balanced(ngx, workers=2, leaked=orphaned)


def test_caller_timeout_cancels_the_async_handler(py_nginx, balanced):
    ngx = py_nginx()
    r = ngx.request("/py?rt=async&m=forever&t=2")
    assert (r.status, r.text) == (500, "timeout")
    ngx.assert_log(r"t_async: forever: started")
    # answered once the handler saw its CancelledError
    r = ngx.request("/py?rt=async&m=wait_cancelled&t=10")
    assert (r.status, r.text) == (200, "cancelled: the caller gave up")
    balanced(ngx, workers=1)


def test_client_abort_cancels_the_async_handler(py_nginx, balanced):
    ngx = py_nginx(server="""
    location = /py {
        lua_check_client_abort on;
        content_by_lua_block { require("t_py").call() }
    }""")
    s = socket.create_connection(("127.0.0.1", ngx.port))
    s.sendall(b"GET /py?rt=async&m=forever HTTP/1.1\r\nHost: x\r\n\r\n")
    ngx.wait_log(r"t_async: forever: started")
    s.close()
    r = ngx.request("/py?rt=async&m=wait_cancelled&t=10")
    assert (r.status, r.text) == (200, "cancelled: the caller gave up")
    balanced(ngx, workers=1)
