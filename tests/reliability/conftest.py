"""Fixtures of the reliability tests: those of tests/nginx (nginx, balanced,
nbffi_build), reused as they are, and the fault runtime of each language.
See README.md."""

import importlib.util
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NGINX_TESTS = HERE.parent / "nginx"
sys.path.insert(0, str(NGINX_TESTS))

from langs import LANGS, Unavailable, fault_runtime  # noqa: E402


def _nginx_conftest():
    """tests/nginx/conftest.py as a module of its own name: its fixtures
    serve this directory too, without a second copy of them."""
    spec = importlib.util.spec_from_file_location(
        "nbffi_nginx_conftest", NGINX_TESTS / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_base = _nginx_conftest()
nginx = _base.nginx
nbffi_build = _base.nbffi_build
balanced = _base.balanced
exit_counters = _base.exit_counters

INIT_WORKER = 'require("fault_rt").init_worker()'

# Every location the tests use; /plain never touches Lua or nbffi.
LOCATIONS = """
location = /plain { return 200 "plain\\n"; }
location = /call { content_by_lua_block { require("fault_rt").call() } }
location = /calls { content_by_lua_block { require("fault_rt").calls() } }
location = /load { content_by_lua_block { require("fault_rt").load() } }
location = /stats { content_by_lua_block { require("fault_rt").stats() } }
location = /close { content_by_lua_block { require("fault_rt").close() } }
location = /soak { content_by_lua_block { require("fault_rt").soak() } }
"""


def fault_nginx_kwargs(fault, cfg=None, opts="", server="",
                       init_worker=INIT_WORKER, env=None, lua_path=(), **kw):
    """Nginx() arguments serving LOCATIONS with the fault runtime."""
    return dict(server=LOCATIONS + server, init_worker=init_worker,
                env={**fault.nginx_env(cfg, opts), **(env or {})},
                lua_path=[HERE / "lua" / "?.lua", *lua_path], **kw)


@pytest.fixture(scope="session")
def fault_runtimes(nbffi_build):
    """get(lang): the FaultRuntime of lang, built once per session; skips
    the test when the language is unavailable."""
    cache = {}

    def get(lang):
        if lang not in cache:
            try:
                cache[lang] = fault_runtime(lang, nbffi_build)
            except Unavailable as e:
                cache[lang] = e
        got = cache[lang]
        if isinstance(got, Unavailable):
            pytest.skip(f"{lang}: {got}")
        return got
    return get


@pytest.fixture(params=LANGS)
def fault(request, fault_runtimes):
    """The fault runtime of each language in turn."""
    return fault_runtimes(request.param)


@pytest.fixture
def fault_nginx(nginx, fault):
    """fault_nginx(cfg=None, opts="", server="", **kw): nginx serving
    LOCATIONS (plus server) with the fault runtime (cfg default: the
    runtime's own) loaded in init_worker; opts "max_queue=4,timeout=5" are
    the load options."""
    def start(**kw):
        return nginx(**fault_nginx_kwargs(fault, **kw))
    return start


def parse_calls(text):
    """The body of /calls: ({outcome: count}, {outcome: max ms})."""
    counts, slowest = {}, {}
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "max_ms":
            slowest[parts[1]] = float(parts[2])
        else:
            counts[parts[1]] = int(parts[0])
    return counts, slowest


def parse_stats(text):
    return {k: v for k, v in (ln.split("=", 1) for ln in text.splitlines())}


def stats(ngx):
    """/stats of the worker that answers: host and fault runtime counters."""
    return parse_stats(ngx.get("/stats").text)


def wait_stat(ngx, name, value, timeout=20):
    """Waits until /stats shows name=value (the dispatcher reaps on its
    own: from outside the worker there is no event to wait on)."""
    end = time.monotonic() + timeout
    while True:
        s = stats(ngx)
        if s.get(name) == str(value):
            return s
        assert time.monotonic() < end, f"{name} != {value}: {s}"
        time.sleep(0.02)
