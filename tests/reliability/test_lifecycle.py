"""nginx's signals under load, in every language: a storm of reloads,
reopen and quit; and runtimes closed and loaded again in one worker."""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from client import Client
from conftest import parse_stats, wait_stat
from harness import NGINX
# True once a pid has exited (gone, or a zombie not yet reaped)
from harness import _is_zombie as gone

RELOADS = int(os.environ.get("NBFFI_RELOADS", "20"))
# Old workers still there 4 x this after the last reload fail the test (a
# stop that hangs); how long each took is printed: tests do not time.
EXIT_S = 5.0
SIZES = (16, 600, 5000, 20000)  # copied and lent (>= 16 KiB) payloads


def nginx_s(ngx, sig):
    """nginx -s SIG, as an operator runs it (through the pid file)."""
    subprocess.run([NGINX, "-p", str(ngx.prefix), "-c",
                    str(ngx.prefix / "conf" / "nginx.conf"), "-s", sig],
                   check=True, capture_output=True, timeout=30)


def reload(ngx, timeout=30):
    """nginx -s reload; waits for the new workers; returns the old pids
    and the new ones."""
    old = set(ngx.worker_pids())
    nginx_s(ngx, "reload")
    end = time.monotonic() + timeout
    while True:
        new = set(ngx.worker_pids(shutting_down=False)) - old
        if len(new) == ngx.workers:
            return old, new
        assert time.monotonic() < end, "no new workers after reload"
        time.sleep(0.01)


class ExitWatch(threading.Thread):
    """Records how long after its reload each old worker was gone."""

    def __init__(self):
        super().__init__(daemon=True)
        self.since = {}         # pid -> time its reload was sent
        self.took = {}          # pid -> seconds from reload to exit
        self.lock = threading.Lock()
        self.done = threading.Event()

    def watch(self, pids, since):
        with self.lock:
            self.since.update(dict.fromkeys(pids, since))

    def run(self):
        while not (self.done.is_set() and len(self.took) == len(self.since)):
            with self.lock:
                pending = [p for p in self.since if p not in self.took]
            now = time.monotonic()
            for p in pending:
                if gone(p):
                    self.took[p] = now - self.since[p]
            time.sleep(0.01)


def threads(pid, names=None):
    """Threads of pid, less libnbffi's that are ending (a start's thread
    outlives the ready it reports by a moment: it is named so then); only
    those whose name matches names if given."""
    found = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (t / "comm").read_text().strip()
        except OSError:
            continue            # gone meanwhile
        if name != "nbffi-exiting" and (names is None
                                        or re.search(names, name)):
            found += 1
    return found


def storm(ngx, clients, reloads, served, each=None):
    """reloads reloads of ngx while the started clients run, each worker
    generation serving (served(ngx, pids) returns once it has) and seen by
    each(pids) before the next; then the clients' results and the
    ExitWatch of the old workers, all gone or waited for 4 x EXIT_S."""
    watch = ExitWatch()
    watch.start()
    current = set(ngx.worker_pids())
    try:
        for _ in range(reloads):
            served(ngx, current)
            if each:
                each(current)
            since = time.monotonic()
            old, current = reload(ngx)
            watch.watch(old, since)
        served(ngx, current)
    finally:
        results = [c.stop() for c in clients]
        watch.done.set()
    watch.join(EXIT_S * 4)
    return results, watch


def echo_check(r):
    return r.status == 200 and len(r.body) in SIZES


def test_reload_storm_under_load(fault, fault_nginx, balanced):
    ngx = fault_nginx(workers=2, log_level="info",
                      main="worker_shutdown_timeout 30s;")
    clients = [Client(ngx, f"/call?m=echo&n={n}", 3, echo_check).start()
               for n in SIZES]
    # ... and calls that are in flight when the reloads come
    clients.append(Client(ngx, "/call?m=sleep&p=20", 2,
                          lambda r: (r.status, r.body) == (200, b"slept"))
                   .start())
    gens = []                   # thread counts of each worker generation
    results, watch = storm(
        ngx, clients, RELOADS, wait_served,
        lambda current: gens.append(sorted(threads(p) for p in current)))

    ok = sum(n for n, _ in results)
    failures = [f for _, fs in results for f in fs]
    assert failures == [] and ok > 0
    assert len(watch.took) == 2 * RELOADS
    print(f"\nslowest exit after HUP: {max(watch.took.values()):.2f} s")
    # every generation ran the same number of threads: none piles up
    if fault.fixed_threads:
        assert all(g == gens[0] for g in gens), gens
    # every worker freed its runtime (joining its threads) and every task
    counters = balanced(ngx, workers=2 * (RELOADS + 1))
    assert sum(c[0] for c in counters) >= ok
    if fault.lang == "c":
        # counted in the text, not by line: workers exiting together may
        # write their last lines into one another (written piecewise)
        assert len(re.findall(r"fault runtime: joined 1 threads, 0 held at "
                              r"fini", ngx.error_log())) == 2 * (RELOADS + 1)


def wait_served(ngx, want, timeout=30):
    """Until every worker in want answered (workers share the listening
    socket: ask until each pid showed up)."""
    seen = set()
    end = time.monotonic() + timeout
    while not want <= seen:
        assert time.monotonic() < end, f"workers {want - seen} never served"
        seen.add(int(parse_stats(ngx.get("/stats").text)["pid"]))


def test_reopen_under_load(fault, fault_nginx, balanced):
    ngx = fault_nginx(log_level="notice")
    client = Client(ngx, "/call?m=echo&n=600", 4, echo_check).start()
    log = ngx.prefix / "logs" / "error.log"
    log.rename(log.with_name("error.log.1"))
    nginx_s(ngx, "reopen")
    end = time.monotonic() + 10
    while not log.exists():
        assert time.monotonic() < end, "error.log not reopened"
        time.sleep(0.01)
    # a runtime's log line lands in the new file
    assert ngx.get("/call?m=log&p=after-reopen").body == b"logged"
    ngx.wait_log(r"after-reopen")
    ok, failures = client.stop()
    assert failures == [] and ok > 0
    balanced(ngx, workers=1)


def test_quit_with_calls_in_flight(fault, fault_nginx, balanced):
    ngx = fault_nginx()
    results = many_async(ngx, ["/call?m=sleep&p=300"] * 4)
    wait_stat(ngx, "rt_in_flight", 4)
    nginx_s(ngx, "quit")
    rs = results()
    assert [(r.status, r.body) for r in rs] == [(200, b"slept")] * 4
    assert ngx.proc.wait(30) == 0
    balanced(ngx, workers=1)


def many_async(ngx, paths):
    """Starts ngx.many(paths) in a thread; returns a function that joins
    it and returns the responses."""
    out = {}
    t = threading.Thread(target=lambda: out.update(r=ngx.many(paths)))
    t.start()

    def join():
        t.join()
        return out["r"]
    return join


def test_close_and_load_again_leaves_no_thread(fault, fault_nginx, balanced):
    if not fault.fixed_threads and fault.thread_names is None:
        pytest.skip(f"{fault.lang}: the runtime has no threads of its own")
    names = None if fault.fixed_threads else fault.thread_names
    ngx = fault_nginx()
    [pid] = ngx.worker_pids()
    assert ngx.get("/call?m=echo&p=x").status == 200
    base = threads(pid, names)
    assert base > 0
    for i in range(30):
        assert ngx.get(f"/call?m=echo&p={i}").body == str(i).encode()
        assert ngx.get("/close").text == "closed\n"
    # the next /call starts a runtime again; the closed ones' threads left
    assert ngx.get("/call?m=echo&p=x").status == 200
    end = time.monotonic() + 10
    while threads(pid, names) > base:
        assert time.monotonic() < end, (threads(pid, names), base)
        time.sleep(0.01)
    balanced(ngx, workers=1)
