"""A real nginx in a temporary prefix, for the integration tests.

Nginx(prefix, ...) writes a config from blocks the test gives, starts nginx
in the foreground (master + workers) on a free 127.0.0.1 port, and offers
requests, reload, quit and error-log assertions.  See README.md.
"""

import functools
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lines that fail every test when they show up in the error log or in
# nginx's stderr (where sanitizers write).
BAD_LOG = re.compile(
    r"\[(alert|crit|emerg)\]|Assertion .* failed|Sanitizer"
    r"|:\d+:\d+: runtime error:|worker process \d+ exited on signal")

NGINX = os.environ.get("NBFFI_NGINX", "nginx")


@functools.cache
def nginx_info():
    """(built-in lua?, modules dir) of the nginx binary, or None if absent."""
    exe = shutil.which(NGINX)
    if exe is None:
        return None
    out = subprocess.run([exe, "-V"], capture_output=True, text=True).stderr
    # OpenResty builds it in: --add-module=.../ngx_lua-0.10.x
    builtin = re.search(r"ngx_lua|lua-nginx-module", out) is not None
    m = re.search(r"--modules-path=(\S+)", out)
    return builtin, Path(m.group(1) if m else "/usr/lib/nginx/modules")


def lua_module_lines():
    """load_module lines for lua-nginx-module, or None if it is missing."""
    info = nginx_info()
    if info is None:
        return None
    builtin, mdir = info
    if builtin:
        return ""
    ndk, lua = mdir / "ndk_http_module.so", mdir / "ngx_http_lua_module.so"
    if not lua.exists():
        return None
    lines = f"load_module {ndk};\n" if ndk.exists() else ""
    return lines + f"load_module {lua};\n"


def build_dir():
    return Path(os.environ.get("NBFFI_BUILD", REPO / "build")).resolve()


def preload_env(extra=None):
    """$NBFFI_NGINX_PRELOAD (e.g. libasan.so, for a sanitizer build of
    libnbffi in $NBFFI_BUILD), then extra, as LD_PRELOAD for nginx."""
    libs = [lib for lib in (os.environ.get("NBFFI_NGINX_PRELOAD"), extra)
            if lib]
    return {"LD_PRELOAD": ":".join(libs)} if libs else {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


CONF = """\
{user}worker_processes {workers};
master_process on;
daemon off;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log {log_level};
worker_rlimit_nofile {nofile};
{modules}{env}{main}
events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    lua_package_path "{lua_path};;";
{init}    init_worker_by_lua_block {{
{init_worker}
    }}
{http}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{server}
    }}
}}
"""


class Nginx:
    """One nginx instance.  Blocks are inserted verbatim:

    main         main context (e.g. "worker_shutdown_timeout 5s;")
    http         http{} context, before the server
    server       the server{} block: locations etc.
    init         Lua code for init_by_lua_block (omitted if empty)
    init_worker  Lua code for init_worker_by_lua_block
    env          {NAME: value}: set for nginx and kept by an "env NAME;"
                 line, so os.getenv works in Lua (NBFFI_LIB is always set)
    lua_path     extra lua_package_path entries (before the repo's lua/)
    workers      worker_processes
    log_level    error_log level (debug by default)
    nofile       worker_rlimit_nofile (16384 by default)
    """

    def __init__(self, prefix, *, main="", http="", server="", init="",
                 init_worker="", env=None, lua_path=(), workers=1,
                 log_level="debug", nofile=16384):
        self.prefix = Path(prefix)
        self.workers = workers
        self.port = None
        self.proc = None
        self.allowed = []       # BAD_LOG matches a test expects
        self._checked = 0       # error log bytes already checked
        self.env = {"NBFFI_LIB": str(build_dir() / "core" / "libnbffi.so")}
        self.env.update(env or {})
        self._blocks = dict(main=main, http=http, server=server, init=init,
                            init_worker=init_worker, log_level=log_level,
                            nofile=nofile,
                            lua_path=";".join([*map(str, lua_path),
                                               str(REPO / "lua/?.lua")]))

    # ---- life cycle ------------------------------------------------------

    def write_conf(self):
        b = self._blocks
        env = "".join(f"env {k};\n" for k in self.env)
        init = ""
        if b["init"]:
            init = f"    init_by_lua_block {{\n{b['init']}\n    }}\n"
        text = CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",
            workers=self.workers, prefix=self.prefix,
            log_level=b["log_level"], nofile=b["nofile"],
            modules=lua_module_lines() or "",
            env=env, main=b["main"], lua_path=b["lua_path"], init=init,
            init_worker=b["init_worker"], http=b["http"], port=self.port,
            server=b["server"])
        (self.prefix / "conf").mkdir(parents=True, exist_ok=True)
        (self.prefix / "logs").mkdir(exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        (self.prefix / "conf" / "nginx.conf").write_text(text)

    def start(self, timeout=10):
        for _ in range(5):      # a free port may be taken before we bind it
            self.port = free_port()
            self.write_conf()
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c",
                 str(self.prefix / "conf" / "nginx.conf"),
                 "-e", str(self.prefix / "logs" / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=open(self.prefix / "logs" / "stdout.log", "ab"),
                stderr=open(self.prefix / "logs" / "stderr.log", "ab"),
                env={**os.environ, **self.env,
                     **preload_env(self.env.get("LD_PRELOAD"))})
            if self._wait_ready(timeout):
                return self
            self.proc.wait(timeout)
            if "Address already in use" not in self.error_log():
                break
        raise RuntimeError("nginx did not start:\n" + self.error_log()[-3000:]
                           + self.stderr()[-2000:])

    def start_fails(self, timeout=60):
        """Starts nginx expecting it to refuse (an init_by_lua error, a
        bad directive); returns its error log and stderr."""
        self.port = free_port()
        self.write_conf()
        r = subprocess.run(
            [NGINX, "-p", str(self.prefix), "-c",
             str(self.prefix / "conf" / "nginx.conf"),
             "-e", str(self.prefix / "logs" / "error.log")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
            env={**os.environ, **self.env,
                 **preload_env(self.env.get("LD_PRELOAD"))})
        assert r.returncode != 0, "nginx started"
        return self.error_log() + r.stderr

    def _wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if len(self.worker_pids()) == self.workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port),
                                             0.5).close()
                    return True
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"nginx not ready within {timeout}s")

    def quit(self, timeout=20):
        """Graceful stop (QUIT); returns False if it needed SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False

    @property
    def master_pid(self):
        return self.proc.pid

    def worker_pids(self, shutting_down=None):
        """Pids of the master's workers; shutting_down=True/False filters
        on "worker process is shutting down" in the process title."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != self.proc.pid or "worker process" not in cmd:
                continue
            if shutting_down is None or \
                    ("shutting down" in cmd) == shutting_down:
                pids.append(int(d.name))
        return sorted(pids)

    def reload(self, timeout=10):
        """HUP: waits for a full set of new workers; returns the old pids."""
        old = set(self.worker_pids())
        self.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            new = set(self.worker_pids(shutting_down=False)) - old
            if len(new) == self.workers:
                return sorted(old)
            time.sleep(0.01)
        raise RuntimeError("no new workers after HUP:\n"
                           + self.error_log()[-3000:])

    @staticmethod
    def wait_gone(pids, timeout=10):
        """Seconds until every pid has exited (raises on timeout)."""
        start = time.monotonic()
        while any(Path(f"/proc/{p}").exists() and
                  not _is_zombie(p) for p in pids):
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"processes {pids} still alive after "
                                   f"{timeout}s")
            time.sleep(0.005)
        return time.monotonic() - start

    # ---- requests --------------------------------------------------------

    def request(self, path, method="GET", body=None, headers=None,
                timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.read(), dict(r.getheaders()))
        finally:
            conn.close()

    get = request

    def many(self, paths, concurrency=50, timeout=30):
        """Requests every path with up to concurrency at once; responses in
        the order of paths (exceptions in place of failed requests)."""
        results = [None] * len(paths)
        it = iter(enumerate(paths))
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    nxt = next(it, None)
                if nxt is None:
                    return
                i, p = nxt
                try:
                    results[i] = self.request(p, timeout=timeout)
                except Exception as e:      # reported per request
                    results[i] = e

        threads = [threading.Thread(target=worker)
                   for _ in range(min(concurrency, len(paths)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    # ---- logs ------------------------------------------------------------

    def error_log(self):
        p = self.prefix / "logs" / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stderr(self):
        p = self.prefix / "logs" / "stderr.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def wait_log(self, pattern, timeout=10, count=1):
        """Waits until pattern (regex) matched count lines; returns them."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.error_log().splitlines()
                     if rx.search(ln)]
            if len(found) >= count:
                return found
            if time.monotonic() > end:
                raise AssertionError(f"no {count} log line(s) /{pattern}/ "
                                     f"within {timeout}s; log tail:\n"
                                     + self.error_log()[-3000:])
            time.sleep(0.01)

    def assert_log(self, pattern):
        assert re.search(pattern, self.error_log()), \
            f"/{pattern}/ not in the error log"

    def assert_no_log(self, pattern):
        m = re.search(".*" + pattern + ".*", self.error_log())
        assert not m, f"unexpected error log line: {m.group(0)}"

    def allow(self, pattern):
        """Lets lines matching pattern pass the bad-line check."""
        self.allowed.append(re.compile(pattern))

    def bad_lines(self):
        text = self.error_log() + self.stderr()
        return [ln for ln in text.splitlines() if BAD_LOG.search(ln)
                and not any(a.search(ln) for a in self.allowed)]


def _is_zombie(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# /hello calls method "hello" with "x" on the runtime of $T_DEPLOY_LIB and
# $T_DEPLOY_CFG (nil: ""), for the deploy tests.
DEPLOY_SERVER = """
location = /hello {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt, err = nbffi.load(os.getenv("T_DEPLOY_LIB"),
                                   os.getenv("T_DEPLOY_CFG"))
        local reply = rt and rt:call("hello", "x", 10)
        if not reply then
            ngx.status = 500
        end
        ngx.print(reply or err)
    }
}
"""

# /redeploy runs Lua code (%s: docs/operations.md's close and load) with
# nbffi, lib and cfg those of /hello, then prints the state of rt.
REDEPLOY = """
location = /redeploy {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local lib = os.getenv("T_DEPLOY_LIB")
        local cfg = os.getenv("T_DEPLOY_CFG")
%s
        ngx.print(rt:state())
    }
}
"""


def wait_reply(ngx, path, want, timeout=20):
    """Requests path until it answers want (a new runtime or new workers
    take over at their pace); returns the last answer's text."""
    end = time.monotonic() + timeout
    while True:
        r = ngx.get(path)
        if r.text == want or time.monotonic() > end:
            return r.text
        time.sleep(0.05)


class Load:
    """A client that requests path from concurrency threads for seconds,
    one new connection per request (so that a reload never closes a
    connection under a request).  check(response) -> bool."""

    def __init__(self, ngx, path, seconds, concurrency, check):
        self.ngx, self.path, self.check = ngx, path, check
        self.seconds, self.concurrency = seconds, concurrency
        self.ok = 0
        self.failures = []      # (reason, detail)
        self._lock = threading.Lock()
        self._threads = []

    def start(self):
        stop = time.monotonic() + self.seconds
        self._threads = [threading.Thread(target=self._run, args=(stop,))
                         for _ in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def join(self):
        for t in self._threads:
            t.join()
        return self.ok, self.failures

    def _run(self, stop):
        while time.monotonic() < stop:
            try:
                r = self.ngx.request(self.path,
                                     headers={"Connection": "close"})
                failure = None if self.check(r) else (
                    "bad response", r.status, r.body[:200])
            except Exception as e:      # counted as a failure
                failure = ("exception", repr(e))
            with self._lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(failure)
