"""pytest fixtures for real-nginx integration tests (see README.md)."""

import os
import re
from pathlib import Path

import pytest

from harness import Nginx, build_dir, lua_module_lines

HERE = Path(__file__).resolve().parent
INIT_WORKER = 'assert(require("resty.nbffi").init())'
EXIT_LINE = re.compile(r"nbffi: worker exit: tasks allocated=(\d+) "
                       r"freed=(\d+) leaked=(\d+) live=(\d+)")


@pytest.fixture(scope="session")
def nbffi_build():
    """The meson build directory ($NBFFI_BUILD, default <repo>/build)."""
    b = build_dir()
    if not (b / "core" / "libnbffi.so").exists():
        pytest.fail(f"{b}/core/libnbffi.so is missing: run "
                    "'meson setup build && ninja -C build' first")
    return b


@pytest.fixture(scope="session")
def echo_env(nbffi_build):
    """env for Nginx(): $NBFFI_ECHO_LIB = the C reference runtime."""
    lib = nbffi_build / "shims" / "c" / "libecho.so"
    if not lib.exists():
        pytest.fail(f"{lib} is missing: run 'ninja -C build'")
    return {"NBFFI_ECHO_LIB": str(lib)}


@pytest.fixture
def nginx(tmp_path, nbffi_build):
    """Factory: nginx(**Nginx kwargs) starts an instance and returns it.

    At teardown every instance is stopped with QUIT (needing SIGKILL fails
    the test) and its error log and stderr are checked for [alert], [crit],
    [emerg], assertion and sanitizer lines.  With NBFFI_NGINX_HUP=1 every
    instance is reloaded once before the test uses it, so tests run on
    second-generation workers and every test exercises a worker exit.
    """
    if lua_module_lines() is None:
        pytest.skip("nginx with lua-nginx-module is not installed")
    started = []

    def start(**kw):
        n = Nginx(tmp_path / f"nginx{len(started)}", **kw)
        started.append(n)
        n.start()
        if os.environ.get("NBFFI_NGINX_HUP") == "1":
            Nginx.wait_gone(n.reload())
        n.exits_before = len(exit_counters(n))
        return n

    yield start

    problems = []
    for n in started:
        if not n.quit():
            problems.append(f"{n.prefix}: nginx needed SIGKILL after QUIT")
        problems += [f"{n.prefix}: {ln}" for ln in n.bad_lines()]
    if problems:
        pytest.fail("\n".join(problems[:50]), pytrace=False)


def exit_counters(ngx, skip=0):
    """[(allocated, freed, leaked, live)] from the workers' exit lines,
    less the first skip ones."""
    return [tuple(map(int, m.groups()))
            for m in EXIT_LINE.finditer(ngx.error_log())][skip:]


@pytest.fixture
def balanced():
    """balanced(ngx, workers=N, leaked=False): stops ngx and asserts that
    each of the N workers that used nbffi since the test got ngx logged its
    exit and freed every task it allocated (invariant 2) -- or, with
    leaked=True, leaked the rest on purpose for an orphaned runtime.
    Returns the counters."""
    def check(ngx, workers=None, leaked=False):
        assert ngx.quit(), "nginx needed SIGKILL after QUIT"
        counters = exit_counters(ngx, ngx.exits_before)
        assert counters, "no 'nbffi: worker exit' line in the error log"
        if workers is not None:
            assert len(counters) == workers, counters
        for allocated, freed, nleaked, live in counters:
            assert allocated == freed + nleaked and live == 0, counters
            assert leaked or nleaked == 0, counters
        return counters
    return check


@pytest.fixture
def echo_nginx(nginx, echo_env):
    """Like nginx(), with the C reference runtime: $NBFFI_ECHO_LIB set,
    tests/nginx/lua on lua_package_path (require("echo_rt").rt(cfg, opts)
    loads it) and nbffi.init() in init_worker unless init_worker is given."""
    def start(init_worker=INIT_WORKER, env=None, lua_path=(), **kw):
        return nginx(init_worker=init_worker, env={**echo_env, **(env or {})},
                     lua_path=[HERE / "lua" / "?.lua", *lua_path], **kw)
    return start
