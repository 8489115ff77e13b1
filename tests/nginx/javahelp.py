"""The Java runtime for the test_java_* tests: libnbffi_java.so and the
nbffi.jar beside it from the meson build, the test handlers from Maven
(shims/java), and an nginx fixture whose worker starts a JVM with
-Xcheck:jni."""

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from harness import REPO

SHIM = REPO / "shims" / "java"
JAR = SHIM / "target" / "nbffi-0.2.0.jar"
TEST_CLASSES = SHIM / "target" / "test-classes"
# What -Xcheck:jni reports while a runtime lives (through the host log).
# Its periodic signal check may also report "handler modified" on stderr
# ("nbffi_java: ..."), once the runtimes are freed, during exit(): libjvm's
# static destructors free the handler table it checks (the JVM is never
# destroyed, see native/runtime.c).  Only that late report is tolerated.
JNI_TROUBLE = r"in native method|nbffi runtime: .*handler modified|hs_err_pid"

# Signals nginx handles or that must reach its event loop.  HotSpot keeps
# SIGUSR2 (its suspend/resume signal) unblocked in its threads; nginx
# workers ignore SIGUSR2.
NGINX_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                 signal.SIGTERM, signal.SIGUSR1, signal.SIGWINCH,
                 signal.SIGCHLD, signal.SIGALRM, signal.SIGIO,
                 signal.SIGPIPE}

CALL = """
client_max_body_size 64m;
client_body_buffer_size 64m;
location = /call {
    content_by_lua_block { require("java_rt").call() }
}
"""


def newer_jdk():
    """A Java 21+ (virtual threads): $NBFFI_JDK21 (scripts/lib.sh sets it),
    else a JDK under /usr/lib/jvm or /opt."""
    if os.environ.get("NBFFI_JDK21"):
        return Path(os.environ["NBFFI_JDK21"])
    for d in sorted([*Path("/usr/lib/jvm").glob("*"), *Path("/opt").glob("*")]):
        java = d / "bin" / "java"
        if not java.exists():
            continue
        out = subprocess.run([str(java), "-version"], capture_output=True,
                             text=True).stderr
        m = re.search(r'version "(\d+)', out)
        if m and int(m.group(1)) >= 21:
            return d
    return None


@pytest.fixture(scope="session")
def java_jar():
    """(Maven's jar, test classes): built with Maven when missing.  A
    runtime's classpath needs the test classes only (the loader brings
    the nbffi jar); the jar is for compiling and for the tests of a
    classpath that lists it too."""
    if not JAR.exists() or not TEST_CLASSES.exists():
        r = subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never",
                            "package", "-DskipTests"], cwd=SHIM,
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail("mvn package failed:\n" + r.stdout + r.stderr)
    return JAR, TEST_CLASSES


@pytest.fixture(scope="session")
def java_lib(nbffi_build):
    lib = nbffi_build / "shims" / "java" / "libnbffi_java.so"
    for f in (lib, lib.with_name("nbffi.jar")):
        if not f.exists():
            pytest.fail(f"{f} is missing: run 'ninja -C build' (needs a"
                        " JDK)")
    return lib


def java_cfg(classpath, handler="io.nbffi.it.TestHandler", extra=""):
    return (f"class={handler}\nclasspath={':'.join(map(str, classpath))}\n"
            f"jvm_option=-Xcheck:jni\n{extra}")


@pytest.fixture
def java_nginx(nginx, java_lib, java_jar):
    """java_nginx(cfg="", handler=..., server=CALL, **kw): nginx whose
    worker loads the Java runtime (handler, the test classes on the
    classpath, cfg lines added) in init_worker; require("java_rt") serves
    the locations.  At teardown the error log must hold no JNI check
    report."""
    started = []

    def start(cfg="", handler="io.nbffi.it.TestHandler", server=CALL,
              init_worker=None, env=None, lua_path=(), **kw):
        full = java_cfg([TEST_CLASSES], handler, cfg)
        ngx = nginx(server=server,
                    init_worker=init_worker
                    or 'require("java_rt").init_worker()',
                    env={"NBFFI_JAVA_LIB": str(java_lib),
                         "NBFFI_JAVA_CFG": full, **(env or {})},
                    lua_path=[SHIM / "tests" / "lua" / "?.lua", *lua_path],
                    **kw)
        started.append(ngx)
        return ngx

    yield start
    for ngx in started:
        ngx.quit()
        ngx.assert_no_log(JNI_TROUBLE)


def blocked_signals(pid):
    """{tid: (name, blocked NGINX_SIGNALS)} of pid's threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        bits = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M)
                   .group(1), 16)
        out[int(task.name)] = ((task / "comm").read_text().strip(),
                               {s for s in NGINX_SIGNALS
                                if bits >> (s - 1) & 1})
    return out


def assert_masks(pid, threads=None):
    """The worker's event loop thread takes every signal; every other
    thread (JVM, pollers, threads Java code started) blocks nginx's."""
    threads = dict(threads or blocked_signals(pid))
    _, blocked = threads.pop(pid)
    assert blocked == set(), "the event loop must get every signal"
    for tid, (name, blocked) in threads.items():
        assert blocked == NGINX_SIGNALS, \
            f"thread {tid} ({name}) takes {NGINX_SIGNALS - blocked}"


def jvm_threads(pid):
    """Names of pid's threads (comm), e.g. "nbffi-poller-0", "C2 Compiler"."""
    return [(t / "comm").read_text().strip()
            for t in Path(f"/proc/{pid}/task").iterdir()]

