"""The fault runtime of each language (handlers/<lang>/), built on demand.

fault_runtime(lang, build) returns a FaultRuntime, or raises Unavailable
with the reason (a shim that has not landed, a missing toolchain).
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import REPO

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"
LANGS = ("c", "python", "go", "java")
FAIL_MSG = "no database at db.invalid"


class Unavailable(Exception):
    """This language's fault runtime cannot be built here; why."""


@dataclass
class FaultRuntime:
    lang: str
    lib: Path
    cfg: str                    # serves the fault methods
    fail_cfg: str               # init fails with FAIL_MSG
    hang_cfg: str               # init never returns
    soak_cfg: str               # echo only, the shim's fastest mode
    alt_cfg: str                # same as cfg, another runtime
    flaky_error: str            # regex: the error of a failing flaky call
    # A slow handler holds up the next call, so the queue must fill;
    # False where calls run concurrently (goroutines, virtual threads).
    bounded: bool = True
    # The shim's guard against a handler that answers a task twice (the
    # reply then is the first answer) ...
    twice_guarded: bool = False
    # ... and against one that touches a task after it was answered: what
    # "late" replies (regex), None where the API cannot express it.
    late_reply: str = None
    # rt:close() answers the calls a runtime still holds (else that waits
    # for the runtime's fini, at worker exit)
    answers_at_close: bool = True
    # A worker runs the same number of threads for the same work (not so
    # with Go's and the JVM's own thread pools) ...
    fixed_threads: bool = True
    # ... else the runtime's own threads are those named so (regex on
    # /proc/PID/task/TID/comm), None when it has none (goroutines).
    thread_names: str = None
    env: dict = field(default_factory=dict)
    # What a failed init says (regex), what a crash looks like in the
    # master's log.
    fail_error: str = ""
    crash_log: str = r"exited on signal 11"

    def nginx_env(self, cfg=None, opts=""):
        return {"NBFFI_FAULT_LIB": str(self.lib),
                "NBFFI_FAULT_CFG": self.cfg if cfg is None else cfg,
                "NBFFI_FAULT_OPTS": opts, **self.env}


def sanitized(build):
    """meson's b_sanitize of the build directory ("" for none)."""
    info = build / "meson-info" / "intro-buildoptions.json"
    if not info.exists():
        return ""
    for o in json.loads(info.read_text()):
        if o["name"] == "b_sanitize":
            return "" if o["value"] == "none" else o["value"]
    return ""


def _c(build):
    out = build / "reliability" / "libfault.so"
    out.parent.mkdir(exist_ok=True)
    san = sanitized(build)
    cmd = ["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-g",
           "-fPIC", "-shared", "-D_GNU_SOURCE",
           f"-I{REPO / 'core' / 'include'}", "-o", str(out),
           str(HANDLERS / "c" / "fault.c"), f"-L{build / 'core'}",
           "-lnbffi", "-lpthread"]
    if san:
        cmd.insert(1, f"-fsanitize={san}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}:\n{r.stderr}")
    return FaultRuntime(
        lang="c", lib=out, cfg="threads=1",
        fail_cfg=f"fail_init={FAIL_MSG.replace(' ', '_')}",
        hang_cfg="hang_init=1", soak_cfg="threads=2",
        alt_cfg="threads=1 threads=1",
        flaky_error=r"^runtime error 1: flaky: call \d+ failed$",
        fail_error=r"init failed: no_database_at_db\.invalid$")


def _python(build):
    lib = build / "shims" / "python" / "libnbffi_python.so"
    if not lib.exists():
        raise Unavailable(f"{lib} is not built (needs python3-dev)")

    def cfg(handler="faults:Faults", **options):
        c = {"handler": handler, "path": [str(HANDLERS / "python")],
             "close_timeout": 1}
        if options:
            c["options"] = options
        return json.dumps(c)

    return FaultRuntime(
        lang="python", lib=lib, cfg=cfg(), fail_cfg=cfg(fail_init=FAIL_MSG),
        hang_cfg=cfg(hang_init=True), soak_cfg=cfg("faults:Echo"),
        alt_cfg=cfg() + " ",
        flaky_error=r"^runtime error 1: ValueError: flaky: call \d+ failed\\n"
                    r"Traceback",
        twice_guarded=True,
        late_reply=r"^RuntimeError: respond: task already answered$",
        fail_error=r"RuntimeError: no database at db\.invalid")


def _go(build):
    if not (REPO / "shims" / "go" / "README.md").exists():
        raise Unavailable("the Go shim has not landed (shims/go/README.md)")
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists() and shutil.which(go) is None:
        raise Unavailable("no go command")
    out = build / "reliability" / "libfaultgo.so"
    out.parent.mkdir(exist_ok=True)
    r = subprocess.run([go, "build", "-buildmode=c-shared", "-o", str(out),
                        "."], cwd=HANDLERS / "go",
                       env={**os.environ, "CGO_LDFLAGS": f"-L{build / 'core'}",
                            "GOFLAGS": "-buildvcs=false -mod=mod"},
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"go build (handlers/go) failed:\n{r.stderr}")
    return FaultRuntime(
        lang="go", lib=out, cfg="", fail_cfg=f"fail_init={FAIL_MSG}",
        hang_cfg="hang_init=1", soak_cfg="", alt_cfg="other=1",
        flaky_error=r"^runtime error \d+: .*flaky: call \d+ failed",
        bounded=False, fixed_threads=False, answers_at_close=False,
        fail_error=r"init failed: .*no database at db\.invalid",
        # Go aborts a library on a fault in C code, after relaying SIGQUIT
        # for stack dumps (see docs/reliability.md)
        crash_log=r"exited on signal (6|11)",
        env={"GOMAXPROCS": "2"})


def _java(build):
    shim = REPO / "shims" / "java"
    if not (shim / "README.md").exists():
        raise Unavailable("the Java shim has not landed "
                          "(shims/java/README.md)")
    lib = build / "shims" / "java" / "libnbffi_java.so"
    jar = shim / "target" / "nbffi-0.2.0.jar"
    if not lib.exists():
        raise Unavailable(f"{lib} is not built (needs a JDK)")
    if not jar.exists():
        raise Unavailable(f"{jar} is not built (cd shims/java && mvn "
                          "package)")
    if shutil.which("javac") is None:
        raise Unavailable("no javac")
    classes = build / "reliability" / "java"
    src = HANDLERS / "java" / "io" / "nbffi" / "reliability" / "Faults.java"
    r = subprocess.run(["javac", "--release", "17", "-nowarn", "-d",
                        str(classes), "-cp", str(jar), str(src)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"javac (handlers/java) failed:\n{r.stderr}")

    def cfg(*lines, threads=1):
        # platform threads, one call at a time per thread; no hs_err file
        # or core dump from the crash test
        return "\n".join([
            "class=io.nbffi.reliability.Faults",
            f"classpath={jar}:{classes}", f"threads={threads}", "batch=1",
            "close_timeout=1000", "jvm_option=-Xmx128m",
            "jvm_option=-Xcheck:jni",
            "jvm_option=-XX:+SuppressFatalErrorMessage",
            "jvm_option=-XX:-CreateCoredumpOnCrash", *lines]) + "\n"

    return FaultRuntime(
        lang="java", lib=lib, cfg=cfg(),
        fail_cfg=cfg(f"arg.fail_init={FAIL_MSG}"),
        hang_cfg=cfg("arg.hang_init=1"), soak_cfg=cfg(threads=2),
        alt_cfg=cfg() + "\n",
        flaky_error=r"^runtime error 1: .*IllegalStateException: flaky: "
                    r"call \d+ failed",
        fixed_threads=False, thread_names=r"^nbffi-poller",
        answers_at_close=False,
        late_reply=r"^IllegalStateException: call 'never' already "
                   r"answered: its payload is gone$",
        fail_error=r"init failed: .*no database at db\.invalid",
        # SuppressFatalErrorMessage: the JVM exits at once, with code 1
        crash_log=r"exited (with code 1|on signal (6|11))")


BUILDERS = {"c": _c, "python": _python, "go": _go, "java": _java}


def fault_runtime(lang, build):
    return BUILDERS[lang](build)
