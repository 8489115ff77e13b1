"""The stall detector in a real nginx: what it names, and when it stays
quiet.  Threshold 50 ms; the stalls made here last 200-400 ms."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import HERE, line_of, status, wait_report, where, WORK

sys.path.insert(0, str(HERE.parent / "docs"))
from docblocks import doc_block  # noqa: E402

SPIN = "/spin?ms=400"


def stalls_of(ngx):
    return status(ngx)["stalls"]


def the_stall(ngx, uri):
    """Waits for the report of the stall of a request for uri; returns it
    from the Lua API (this test's nginx has one worker)."""
    wait_report(ngx, uri)
    found = [s for s in stalls_of(ngx) if s["context"].endswith(" " + uri)]
    assert len(found) == 1, stalls_of(ngx)
    return found[0]


def heaviest(stall, key):
    return max(stall["backtraces"], key=lambda b: b[key])


@pytest.mark.parametrize("jit", ["on", "off"])
def test_cpu_stall_named_at_its_line(stall_nginx, jit):
    ngx = stall_nginx(jit=jit)
    assert ngx.get(SPIN).status == 200

    s = the_stall(ngx, SPIN)
    assert s["context"] == "content GET " + SPIN
    top = s["backtraces"][0]
    frames = top["frames"]
    assert frames[0] == {"where": where("burn"), "name": "burn"}, frames
    assert frames[1] == {"where": where("spin"), "name": "spin"}, frames
    assert top["cpu_ms"] > top["wait_ms"], top
    if jit == "on":
        # Sampled inside the compiled trace of burn's loop.
        assert top["vm"]["compiled"] > 0, top
    else:
        assert s["vm"]["compiled"] == 0, s
        assert top["vm"]["interpreted"] > 0, top

    # The error log: one summary line, then the backtraces.
    ngx.wait_log(rf"stall {s['id']} backtrace 1/\d+: \d+ samples, cpu "
                 rf"[\d.]+ ms, wait [\d.]+ ms, run queue [\d.]+ ms, content "
                 rf"GET {re.escape(SPIN)}: {re.escape(where('burn'))} "
                 rf"\(burn\) < {re.escape(where('spin'))} \(spin\) < ")


@pytest.mark.parametrize("kind", ["nap", "shell"])
def test_blocking_call_named_by_its_lua_caller(stall_nginx, kind):
    """FFI usleep(), and os.execute (waitpid): the loop sleeps in the
    kernel; the sample is taken when the call returns, at its caller."""
    ngx = stall_nginx()
    uri = f"/{kind}?ms=300"
    assert ngx.get(uri).status == 200

    s = the_stall(ngx, uri)
    assert s["wait_ms"] > s["cpu_ms"], s
    blocked = heaviest(s, "wait_ms")
    # The VM samples where it resumes: the call's line, or the next one
    # when the call ends it.
    top = blocked["frames"][0]
    assert top["name"] == kind, blocked
    assert top["where"] in (where(kind), f"{WORK}:{line_of(kind) + 1}"), \
        blocked
    assert blocked["wait_ms"] > blocked["cpu_ms"], blocked
    # Asked while the loop slept, from the watchdog: no signal to cut the
    # call short.
    assert status(ngx)["stats"]["wakes"] > 0


def test_blocking_read_named_by_its_lua_caller(stall_nginx, tmp_path):
    """io.open + read on a FIFO: the worker sleeps in read() until this
    test, which opens the other end once the worker has opened its own,
    writes and closes 300 ms later."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.chmod(tmp_path, 0o755)       # for a worker that is not root
    os.chmod(fifo, 0o666)
    ngx = stall_nginx()
    uri = f"/slurp?path={fifo}"

    replies = []
    client = threading.Thread(target=lambda: replies.append(ngx.get(uri)))
    client.start()
    with open(fifo, "w") as w:      # returns once the worker opened it
        time.sleep(0.3)             # the slow file: not a synchronisation
        w.write("late data")
    client.join()
    assert replies[0].status == 200

    s = the_stall(ngx, uri)
    assert s["wait_ms"] > s["cpu_ms"], s
    top = heaviest(s, "wait_ms")["frames"][0]
    assert top["name"] == "slurp", top
    assert top["where"] in (where("slurp"), f"{WORK}:{line_of('slurp') + 1}")


def test_timer_stall_named_by_its_callback(stall_nginx):
    ngx = stall_nginx()
    assert ngx.get("/timer?ms=300").status == 200

    callback = f"timer {WORK}:{line_of('timer_job')}"
    ngx.wait_log(rf"stall \d+: [\d.]+ ms in {re.escape(callback)},")
    (s,) = stalls_of(ngx)
    assert s["context"] == callback
    assert s["backtraces"][0]["frames"][0]["where"] == where("burn")


def test_no_report_under_normal_load(stall_nginx):
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed")
    ngx = stall_nginx(log_level="info")
    url = f"http://127.0.0.1:{ngx.port}/plain"
    out = subprocess.run([wrk, "-t2", "-c50", "-d10s", url],
                         capture_output=True, text=True, timeout=60).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 1000, out

    st = status(ngx)
    assert st["stalls"] == [], st
    assert st["stats"]["stalls"] == 0, st
    assert st["stats"]["beats"] > 100, st      # it was watching all along
    ngx.assert_no_log(r"stall \d+:")

    # And it still sees a stall after the load.
    assert ngx.get(SPIN).status == 200
    the_stall(ngx, SPIN)


def test_two_workers_report_independently(stall_nginx):
    ngx = stall_nginx(workers=2)

    served = {}                 # pid -> uris it stalled on
    for i in range(40):
        uri = f"/spin?ms=200&n={i}"
        pid = int(ngx.get(uri).text)
        served.setdefault(pid, []).append(uri)
        if len(served) == 2 and i >= 3:
            break
    assert len(served) == 2, served

    for pid, uris in served.items():
        for n, uri in enumerate(uris, 1):
            (line,) = wait_report(ngx, uri)
            # Each worker numbers its own stalls.
            assert re.search(rf"\] {pid}#\d+: .* stall {n}: ", line), line

    seen = {}
    for _ in range(100):
        st = status(ngx)
        seen[st["pid"]] = st
        if len(seen) == 2:
            break
    assert set(seen) == set(served)
    for pid, st in seen.items():
        uris = [s["context"].split(" ", 2)[2] for s in st["stalls"]]
        assert sorted(uris) == sorted(served[pid]), (pid, st)
        assert st["stats"]["stalls"] == len(served[pid])


def test_on_and_off_at_runtime(stall_nginx):
    ngx = stall_nginx()

    ngx.get("/off")
    assert status(ngx)["stats"]["running"] is False
    ngx.get("/spin?ms=300&off=1")

    ngx.get("/on?threshold=0.05")
    assert status(ngx)["stats"]["running"] is True
    ngx.get("/spin?ms=300&on=1")
    the_stall(ngx, "/spin?ms=300&on=1")

    # Again, with another threshold (a restart).
    ngx.get("/off")
    ngx.get("/spin?ms=300&off=2")
    ngx.get("/on?threshold=0.1")
    ngx.get("/spin?ms=300&on=2")
    wait_report(ngx, "/spin?ms=300&on=2")

    ngx.assert_no_log(r"stall \d+: .*&off=")
    contexts = [s["context"] for s in stalls_of(ngx)]
    assert contexts == ["content GET /spin?ms=300&on=2",
                        "content GET /spin?ms=300&on=1"], contexts


def test_survives_reload(stall_nginx):
    ngx = stall_nginx()
    old = int(ngx.get("/spin?ms=300&gen=1").text)
    wait_report(ngx, "/spin?ms=300&gen=1")

    ngx.wait_gone(ngx.reload())
    new = int(ngx.get("/spin?ms=300&gen=2").text)
    assert new != old
    (line,) = wait_report(ngx, "/spin?ms=300&gen=2")
    assert re.search(rf"\] {new}#\d+: .* stall 1: ", line), line
    assert status(ngx)["stats"]["running"] is True


def test_bad_options_and_wrong_phase(stall_nginx, nginx, stall_lib):
    ngx = stall_nginx(start="{ threshold = 0.001 }")
    ngx.wait_log(r"init_worker_by_lua.*threshold below 0.01 s")
    assert status(ngx)["stats"]["running"] is False

    ngx = nginx(init='local ok, err = require("resty.nbffi.stall").start()\n'
                     'assert(not ok and err:find("init_worker"), err)',
                env={"NBFFI_STALL_LIB": str(stall_lib)})
    assert ngx.get("/").status == 404


def test_doc_blocks(nginx, stall_lib):
    """docs/stall.md's blocks, as written: the http block's init_worker
    starts the detector (default threshold), the Lua API's require line
    runs, and the /stalls location serves the stall a request made."""
    http = doc_block("stall.md", "http {")
    init = re.search(r"init_worker_by_lua_block \{\n(.*?)\n    \}", http,
                     re.S).group(1)
    stalls = doc_block("stall.md", "location = /stalls {")
    api = doc_block("stall.md", "local stall = require")
    ngx = nginx(init_worker=init, env={"NBFFI_STALL_LIB": str(stall_lib)},
                lua_path=[HERE / "lua" / "?.lua"],
                server=stalls + f"""
        location = /api {{ content_by_lua_block {{
            {api}
            ngx.say(type(stall.recent))
        }} }}
        location = /spin {{
            content_by_lua_block {{ require("stallwork").run("spin") }}
        }}""")
    assert ngx.get("/api").text == "function\n"
    assert ngx.get("/spin?ms=400").status == 200
    wait_report(ngx, "/spin?ms=400")
    found = json.loads(ngx.get("/stalls").body)
    assert [s["context"] for s in found] == ["content GET /spin?ms=400"]
