"""What the nginx benchmarks share (bench/run, bench/go/run,
bench/python/run): nginx configured with the nbbench Lua module
(lua/nbbench.lua: vias and the /seq, /many, /one, /plain locations), wrk,
CPU and memory of processes, sidecar processes, the builds of the language
pieces, and the description of the machine.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nginx"))

from harness import Nginx, build_dir, lua_module_lines  # noqa: E402

LUA = REPO / "bench" / "lib" / "lua"
JAR = REPO / "shims" / "java" / "target" / "nbffi-0.2.0.jar"
PAYLOAD = 512                   # bytes, of /one and /plain
THREAD_POOL = "nbbench"         # of the ngx.run_worker_thread vias

LOCATIONS = """
location = /seq { content_by_lua_block { require("nbbench").seq() } }
location = /many { content_by_lua_block { require("nbbench").many() } }
location = /one { content_by_lua_block { require("nbbench").one() } }
location = /plain { content_by_lua_block { require("nbbench").plain() } }
"""


# ---- nginx ----------------------------------------------------------------

def lua_literal(v):
    """v (dict, list, str, int, float, bool, None) as a Lua expression."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(x)}"
                               for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(map(lua_literal, v)) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nil"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def nginx(prefix, vias, workers=1, env=None, main="", thread_pool=2):
    """A started nginx whose workers load the nbffi runtimes of vias
    ({name: via}, see nbbench.lua) in init_worker and serve LOCATIONS."""
    if lua_module_lines() is None:
        sys.exit("needs nginx with lua-nginx-module")
    return Nginx(
        prefix, workers=workers, log_level="error",
        main=f"thread_pool {THREAD_POOL} threads={thread_pool};\n{main}",
        # a worker thread VM per queued run_worker_thread call
        http="lua_worker_thread_vm_pool_size 1024;\n"
             "init_by_lua_block {\n    require(\"nbbench\").configure("
             + lua_literal(vias) + ")\n}",
        init_worker='require("nbbench").init_worker()',
        server=LOCATIONS, env=env, lua_path=[LUA / "?.lua"]).start(
            timeout=60)


def sequential(ngx, via, size, n, pids):
    """n calls of size bytes through via from one request: (us per call,
    CPU us per call of every thread of pids)."""
    before = cpu_total(pids)
    r = ngx.request(f"/seq?via={via}&n={n}&size={size}", timeout=1800)
    cpu = cpu_total(pids) - before
    if r.status != 200:
        sys.exit(f"/seq via={via}: {r.status} {r.text[:500]}")
    ok, secs = r.text.split()
    if int(ok) != n:
        sys.exit(f"/seq via={via} size={size}: {ok} of {n} calls succeeded")
    return float(secs) * 1e6 / n, cpu / 1e3 / n


def many(ngx, via, n, size=PAYLOAD, threads=8):
    """n calls through via from threads light threads of one request."""
    r = ngx.request(f"/many?via={via}&n={n}&size={size}&threads={threads}",
                    timeout=3600)
    if r.status != 200 or int(r.text) != n:
        sys.exit(f"/many via={via}: {r.status} {r.text[:500]}")


# ---- processes ------------------------------------------------------------

def cpu_ns(pid):
    """{tid: ns on CPU} for every thread of pid."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(t.name)] = int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return out


def cpu_total(pids):
    """ns on CPU of every thread of pids."""
    return sum(sum(cpu_ns(p).values()) for p in pids)


def pin(pid):
    """The event loop thread of worker pid on CPU 0, every other thread (the
    runtimes') on CPU 1: the placement spinning is meant for."""
    for t in Path(f"/proc/{pid}/task").iterdir():
        cpu = "0" if int(t.name) == pid else "1"
        subprocess.run(["taskset", "-pc", cpu, t.name], check=True,
                       capture_output=True)


def rss_kb(pid):
    """VmRSS of pid, KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


class Sidecar:
    """A sidecar process that prints "listening..." once it serves."""

    def __init__(self, argv, env=None):
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            self.stop()
            sys.exit(f"sidecar {self.argv} said {line!r}")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


# ---- wrk ------------------------------------------------------------------

@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_us: float
    p99_us: float
    errors: int         # socket errors and non-2xx replies
    non2xx: int = 0
    timeouts: int = 0


def _us(text):
    """wrk's latency in us; NaN where wrk printed none."""
    if text is None:
        return float("nan")
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def wrk(ngx, path, conns=50, seconds=5, threads=1, script=None,
        strict=True, timeout=None):
    """wrk against path: its counts, rate and latency.  A rate means
    nothing if there were errors: strict exits then, else the caller
    checks errors.  timeout: seconds after which wrk counts a request as
    timed out (its default: 2)."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    if timeout:
        cmd += ["--timeout", f"{timeout}s"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{ngx.port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    errors = sum(int(n) for n in re.findall(
        r"(?:Non-2xx or 3xx responses|connect|read|write|timeout)"
        r":? (\d+)", out))
    if errors and strict:
        sys.exit(f"wrk {path}: errors:\n{out}")
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return WrkResult(int(re.search(r"(\d+) requests in", out).group(1)),
                     float(re.search(r"Requests/sec:\s+([\d.]+)",
                                     out).group(1)),
                     _us(lat.get("50")), _us(lat.get("99")), errors,
                     _count(r"Non-2xx or 3xx responses: (\d+)", out),
                     _count(r"timeout (\d+)", out))


def _count(pattern, text):
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


# ---- builds ---------------------------------------------------------------

def go():
    return os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"


def go_build(pkg, out, shared):
    """A package of the bench/go module: a c-shared runtime library or a
    program."""
    cmd = [go(), "build", "-o", str(out)]
    if shared:
        cmd.append("-buildmode=c-shared")
    subprocess.run(cmd + [pkg], cwd=REPO / "bench" / "go", check=True,
                   env={**os.environ,
                        "CGO_LDFLAGS": f"-L{build_dir() / 'core'}"})
    return out


def cc(out, *args):
    """cc -O2 with the tree's header and libnbffi."""
    core = build_dir() / "core"
    subprocess.run(["cc", "-O2", "-D_GNU_SOURCE", "-o", str(out),
                    *map(str, args), f"-I{REPO / 'core' / 'include'}",
                    f"-L{core}"], check=True)
    return out


def embedded_python():
    """The python binary of the libpython the Python shim embeds."""
    def pc(*args):
        return subprocess.run(["pkg-config", *args, "python3-embed"],
                              capture_output=True, text=True,
                              check=True).stdout.strip()
    return Path(pc("--variable=prefix")) / "bin" / \
        f"python{pc('--modversion')}"


def java_home():
    home = os.environ.get("JAVA_HOME")
    if home:
        return Path(home)
    return Path(os.path.realpath(shutil.which("javac"))).parents[1]


def java_classes(out):
    """The nbffi jar (Maven, if absent) and bench/java's classes (javac):
    the classpath."""
    if not JAR.exists():
        subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "package",
                        "-DskipTests"], cwd=JAR.parents[1], check=True)
    subprocess.run([str(java_home() / "bin" / "javac"), "--release", "17",
                    "-cp", str(JAR), "-d", str(out),
                    *map(str, (REPO / "bench" / "java").glob("*.java"))],
                   check=True)
    return f"{JAR}:{out}"


# ---- the machine ----------------------------------------------------------

def _cmd(*argv, stderr=False):
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True)
    except OSError:
        return "(not installed)"
    return (r.stderr if stderr else r.stdout).strip()


def environment():
    """[(what, value)]: machine, versions, commit."""
    cpu = re.search(r"model name\s*:\s*(.*)",
                    Path("/proc/cpuinfo").read_text()).group(1)
    mem = int(re.search(r"MemTotal:\s+(\d+)",
                        Path("/proc/meminfo").read_text()).group(1))
    commit = _cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    dirty = _cmd("git", "-C", str(REPO), "status", "--porcelain")
    lua = _cmd("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-http-lua")
    luajit = _cmd("dpkg-query", "-W", "-f=${Version}", "libluajit2-5.1-2")
    java = _cmd(str(java_home() / "bin" / "java"), "-version", stderr=True)
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} vCPUs, "
                f"{mem // 1024 // 1024} GiB RAM"),
        ("OS", f"Linux {platform.release()}, "
               + _cmd("sh", "-c", ". /etc/os-release && echo "
                      "$PRETTY_NAME")),
        ("nginx -V", _cmd("nginx", "-V", stderr=True)),
        ("lua-nginx-module", lua or "(built in)"),
        ("LuaJIT", f"libluajit2 {luajit}" if luajit
         else _cmd("luajit", "-v")),
        ("Go", _cmd(go(), "version")),
        ("Python (embedded, and the sidecar)",
         _cmd(str(embedded_python()), "--version")),
        ("Java", java.splitlines()[1] if "\n" in java else java),
        ("wrk", _cmd("wrk", "-v", stderr=False).splitlines()[0]
         if shutil.which("wrk") else "(not installed)"),
        ("load average at start (1, 5, 15 min)",
         " ".join(Path("/proc/loadavg").read_text().split()[:3])),
        ("commit", commit + (" + uncommitted changes" if dirty else "")),
        ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
    ]
