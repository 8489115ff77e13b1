"""Every language in one worker: C, Python, Go and Java runtimes loaded
side by side (in both orders of Go and the JVM, whose signal handlers
must agree), called under load through a storm of reloads."""

import os
import time

import pytest

from client import Client
from conftest import HERE
from test_lifecycle import storm

RELOADS = int(os.environ.get("NBFFI_MIXED_RELOADS", "8"))
SIZE = 600

SERVER = """
location = /mixed { content_by_lua_block { require("mixed_rt").call() } }
location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
"""


def wait_served(ngx, want, timeout=30):
    """Until every worker in want answered."""
    seen = set()
    end = time.monotonic() + timeout
    while not want <= seen:
        assert time.monotonic() < end, f"workers {want - seen} never served"
        seen.add(int(ngx.get("/pid").text))


@pytest.mark.parametrize("order", [("java", "go"), ("go", "java")],
                         ids=["java-first", "go-first"])
def test_storm_with_every_language(order, nginx, fault_runtimes, balanced):
    langs = [*order, "python", "c"]
    runtimes = {lang: fault_runtimes(lang) for lang in langs}
    env = {"NBFFI_MIXED_ORDER": " ".join(langs)}
    for lang, f in runtimes.items():
        env.update(f.env)
        env[f"NBFFI_MIXED_{lang.upper()}_LIB"] = str(f.lib)
        env[f"NBFFI_MIXED_{lang.upper()}_CFG"] = f.cfg
    ngx = nginx(workers=2, log_level="info", server=SERVER,
                main="worker_shutdown_timeout 30s;",
                init_worker='require("mixed_rt").init_worker()',
                env=env, lua_path=[HERE / "lua" / "?.lua"])

    def echoed(r):
        return r.status == 200 and len(r.body) == SIZE

    clients = [Client(ngx, f"/mixed?lang={lang}&n={SIZE}", 2, echoed).start()
               for lang in langs]
    results, watch = storm(ngx, clients, RELOADS, wait_served)

    failures = [f for _, fs in results for f in fs]
    assert failures == [], failures[:5]
    assert all(n > 0 for n, _ in results), [n for n, _ in results]
    assert len(watch.took) == 2 * RELOADS
    print(f"\nslowest exit after HUP: {max(watch.took.values()):.2f} s")
    balanced(ngx, workers=2 * (RELOADS + 1))
