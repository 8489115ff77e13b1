"""The soak: wrk with many connections and mixed payload sizes against
each language's runtime for a long time, then: no error, the worker's RSS
and open fds flat after warm-up, every task freed.

    python3 tests/reliability/soak.py [--seconds 600] [--connections 100]
        [--langs c,python,go,java]

scripts/soak runs it; test_soak.py runs a short one.  Prints one table
row per language and exits non-zero if any language failed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import exit_counters, fault_nginx_kwargs  # noqa: E402
from harness import Nginx, build_dir  # noqa: E402
from langs import LANGS, Unavailable, fault_runtime  # noqa: E402

# "Flat": after warm-up, RSS may grow by at most this much (allocator and
# runtime caches settling, e.g. a JIT or a GC sizing its heap) ...
RSS_GROWTH_PCT = 10
RSS_GROWTH_MIB = 16
# ... and the worker holds exactly as many fds, less its client connections.


@dataclass
class Result:
    lang: str
    seconds: float = 0
    requests: int = 0
    errors: int = 0             # non-2xx, socket errors, timeouts
    rss_start: int = 0          # KiB, after warm-up, clients gone
    rss_end: int = 0
    rss_max: int = 0            # KiB, while loaded
    fds_start: int = 0
    fds_end: int = 0
    fds_max: int = 0
    allocated: int = 0          # tasks, from the worker's exit line
    freed: int = 0
    problems: list = field(default_factory=list)

    def check(self):
        if self.requests == 0:
            self.problems.append("no request completed")
        if self.errors:
            self.problems.append(f"{self.errors} errors")
        bound = self.rss_start * (1 + RSS_GROWTH_PCT / 100) \
            + RSS_GROWTH_MIB * 1024
        if self.rss_end > bound:
            self.problems.append(f"RSS grew {self.rss_start} -> "
                                 f"{self.rss_end} KiB")
        if self.fds_end != self.fds_start:
            self.problems.append(f"fds {self.fds_start} -> {self.fds_end}")
        if self.allocated != self.freed or self.allocated < self.requests:
            self.problems.append(f"tasks allocated {self.allocated}, "
                                 f"freed {self.freed}")
        return not self.problems


def rss_kib(pid):
    m = re.search(r"VmRSS:\s+(\d+) kB",
                  Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1))


def client_sockets(port):
    """Inodes of the TCP connections to 127.0.0.1:port (not the listener):
    the clients', which the worker may still be closing."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] != "0A":
                inodes.add(f[9])
    return inodes


def fds(pid, port=None):
    """Open fds of pid, less its client connections to port if given."""
    skip = {f"socket:[{i}]" for i in client_sockets(port)} if port else ()
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) not in skip:
                n += 1
        except OSError:
            pass                # closed meanwhile
    return n


def wrk(ngx, seconds, connections):
    """Runs wrk; returns (requests, errors)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--timeout",
         "10s", "-s", str(HERE / "mix.lua"),
         f"http://127.0.0.1:{ngx.port}"],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        errors += sum(map(int, m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return requests, errors


def soak(ngx, lang, seconds, connections, warmup):
    """Loads a started nginx (one worker); returns a checked Result."""
    res = Result(lang, seconds=seconds)
    [pid] = ngx.worker_pids()
    wrk(ngx, warmup, connections)
    res.rss_start = rss_kib(pid)
    res.fds_start = fds(pid, ngx.port)

    stop = threading.Event()

    def sample():
        while not stop.wait(1):
            res.rss_max = max(res.rss_max, rss_kib(pid))
            res.fds_max = max(res.fds_max, fds(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        res.requests, res.errors = wrk(ngx, seconds, connections)
    finally:
        stop.set()
        sampler.join()
    res.rss_end = rss_kib(pid)
    res.fds_end = fds(pid, ngx.port)

    if not ngx.quit():
        res.problems.append("nginx needed SIGKILL")
    counters = exit_counters(ngx)
    if counters:
        res.allocated, res.freed, _, _ = counters[-1]
    res.problems += ngx.bad_lines()[:5]
    res.check()
    return res


HEADER = ("lang", "secs", "requests", "req/s", "errors", "rss_start",
          "rss_end", "rss_max", "fds_start", "fds_end", "fds_max",
          "allocated", "freed", "result")


def row(r):
    return (r.lang, f"{r.seconds:g}", r.requests,
            f"{r.requests / r.seconds:.0f}" if r.seconds else "-",
            r.errors, f"{r.rss_start // 1024}M", f"{r.rss_end // 1024}M",
            f"{r.rss_max // 1024}M", r.fds_start, r.fds_end, r.fds_max,
            r.allocated, r.freed,
            "ok" if not r.problems else "FAIL: " + "; ".join(
                map(str, r.problems)))


def table(rows):
    cells = [HEADER] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(c[i]) for c in cells[:]) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths))
                     for line in cells)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of load before the baseline "
                         "(default: a tenth of --seconds, at least 5)")
    ap.add_argument("--langs", default=",".join(LANGS))
    a = ap.parse_args()
    warmup = a.warmup if a.warmup is not None else max(5, a.seconds / 10)

    build = build_dir()
    rows, failed = [], False
    for lang in a.langs.split(","):
        try:
            fault = fault_runtime(lang, build)
        except Unavailable as e:
            print(f"soak: {lang}: skipped: {e}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix=f"nbffi-soak-{lang}-") as d:
            ngx = Nginx(d, **fault_nginx_kwargs(fault, cfg=fault.soak_cfg,
                                                log_level="notice"))
            ngx.start()
            try:
                r = soak(ngx, lang, a.seconds, a.connections, warmup)
            finally:
                ngx.quit()
        rows.append(row(r))
        failed |= bool(r.problems)
        print(f"soak: {lang}: {row(r)[-1]}", file=sys.stderr, flush=True)
    print(f"soak: wrk -t2 -c{a.connections} -d{a.seconds:g}s, mixed "
          f"payloads (tests/reliability/mix.lua), {warmup:g} s warm-up; "
          f"flat = RSS growth <= {RSS_GROWTH_PCT}% + {RSS_GROWTH_MIB} MiB, "
          "same fds")
    print(table(rows))
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
