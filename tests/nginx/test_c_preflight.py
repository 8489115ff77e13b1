"""nbffi.preflight in init_by_lua: nginx does not start, and a reload
keeps the old configuration, when a runtime library would not load; the
message names the file and why.  The check runs in a forked child: no
runtime thread ever starts in the master."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from harness import NGINX, Nginx, free_port, preload_env

SERVER = """
location = /upper {
    content_by_lua_block {
        ngx.say(require("echo_rt").rt():call("upper", "hi"))
    }
}
"""


def preflight(lib, opts="nil", cfg="nil"):
    return (f'assert(require("resty.nbffi").preflight({lib}, {cfg},'
            f' {opts}))')


@pytest.fixture
def echo_conf(tmp_path, nbffi_build, echo_env):
    """Nginx(**kw) with the C runtime's env, not started."""
    def make(**kw):
        here = Path(__file__).resolve().parent
        return Nginx(tmp_path / "nginx", env=echo_env,
                     lua_path=[here / "lua" / "?.lua"], **kw)
    return make


def test_a_good_library_passes(echo_nginx, balanced):
    ngx = echo_nginx(server=SERVER,
                     init=preflight('os.getenv("NBFFI_ECHO_LIB")',
                                    cfg='"threads=1"'))
    assert ngx.get("/upper").text == "HI\n"
    balanced(ngx, workers=1)


def test_missing_path(echo_conf):
    log = echo_conf(init=preflight('"/nope/libkvrt.so"')).start_fails()
    assert "init_by_lua error" in log
    assert ("nbffi.preflight: cannot load runtime library: /nope/libkvrt.so:"
            " cannot open shared object file: No such file or directory"
            in log), log


def test_short_name_not_found(echo_conf, tmp_path):
    ngx = echo_conf(init=preflight(
        '"kvrt"', f'{{ search_path = "{tmp_path}/a:{tmp_path}/b" }}'))
    log = ngx.start_fails()
    assert (f'nbffi.preflight: cannot load runtime library: kvrt: not found:'
            f' no libkvrt.so in search path "{tmp_path}/a:{tmp_path}/b",'
            f' and the dynamic linker finds neither libkvrt.so nor kvrt'
            in log), log


def test_not_an_nbffi_library(echo_conf):
    log = echo_conf(init=preflight('"libc.so.6"')).start_fails()
    assert ("nbffi.preflight: runtime library lacks an entry point:"
            " libc.so.6: no nbffi_runtime_abi: not an nbffi runtime library"
            in log), log


def test_another_abi(echo_conf, tmp_path):
    src = tmp_path / "old.c"
    src.write_text("unsigned nbffi_runtime_abi(void) { return 1; }\n"
                   "int nbffi_runtime_init(void) { return 0; }\n")
    lib = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)],
                   check=True)
    log = echo_conf(init=preflight(f'"{lib}"')).start_fails()
    assert (f"nbffi.preflight: runtime library built for another ABI"
            f" version: {lib}: built for nbffi ABI 1, this libnbffi has"
            f" ABI 2" in log), log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_worker_user_cannot_read(echo_conf, tmp_path, echo_env):
    lib = tmp_path / "libprivate.so"
    shutil.copy(echo_env["NBFFI_ECHO_LIB"], lib)
    lib.chmod(0o600)
    ngx = echo_conf(init=preflight(f'"{lib}"', '{ user = "nobody" }'))
    log = ngx.start_fails()
    assert (f"nbffi.preflight: cannot load runtime library: {lib}: cannot"
            f" open shared object file: Permission denied (as the workers'"
            f" user nobody)" in log), log
    ngx = echo_conf(init=preflight(f'"{lib}"',
                                   '{ user = "no-such-user" }'))
    log = ngx.start_fails()
    assert ('nbffi.preflight: operation not permitted: no user'
            ' "no-such-user"' in log), log


class NobodyNginx(Nginx):
    """Workers as nobody: the user line of nginx.conf says so."""

    def write_conf(self):
        super().write_conf()
        conf = self.prefix / "conf" / "nginx.conf"
        conf.write_text(conf.read_text().replace("user root;",
                                                 "user nobody nogroup;"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_the_user_directive_is_the_default(tmp_path, nbffi_build, echo_env):
    lib = tmp_path / "libprivate.so"
    shutil.copy(echo_env["NBFFI_ECHO_LIB"], lib)
    lib.chmod(0o600)
    ngx = NobodyNginx(tmp_path / "nginx", env=echo_env,
                      init=preflight(f'"{lib}"'))
    log = ngx.start_fails()
    assert ("Permission denied (as the workers' user nobody:nogroup)"
            in log), log
    # user = false: no check of the user
    ngx = NobodyNginx(tmp_path / "nginx2", env=echo_env,
                      init=preflight(f'"{lib}"', "{ user = false }")
                      + "\nerror('preflight passed')")
    assert "preflight passed" in ngx.start_fails()


def test_failing_check_of_the_cfg(echo_conf):
    # the C runtime checks its cfg in the child as its init would
    ngx = echo_conf(init=preflight('os.getenv("NBFFI_ECHO_LIB")',
                                   cfg='"threads=99"'))
    log = ngx.start_fails()
    assert "nbffi.preflight: runtime init failed: " in log, log
    assert "threads" in log


WORKER = """
location = /preflight {
    content_by_lua_block {
        ngx.say(select(2, require("resty.nbffi").preflight(
            os.getenv("NBFFI_ECHO_LIB"))))
    }
}
"""


def test_not_in_a_worker(echo_nginx, balanced):
    # it blocks for the child: a worker must not wait on it
    ngx = echo_nginx(server=WORKER)
    assert ngx.get("/preflight").text == (
        "nbffi.preflight: only in init_by_lua* (it blocks for the check)\n")
    balanced(ngx, workers=1)


def test_reload_keeps_the_old_configuration(echo_nginx, balanced):
    ngx = echo_nginx(server=SERVER,
                     init=preflight('os.getenv("NBFFI_ECHO_LIB")'))
    (worker,) = ngx.worker_pids()
    ngx._blocks["init"] = preflight('"/nope/libkvrt.so"')
    ngx.write_conf()
    ngx.proc.send_signal(signal.SIGHUP)
    ngx.wait_log(r"\[error\] .*init_by_lua error.*nbffi.preflight: cannot"
                 r" load runtime library: /nope/libkvrt.so")
    # the old configuration serves on, with the same worker
    assert ngx.get("/upper").text == "HI\n"
    assert ngx.worker_pids() == [worker]
    balanced(ngx, workers=1)


def test_nginx_t_runs_no_init_by_lua(echo_conf):
    """Debian's nginx -t does not run init_by_lua* (docs/operations.md says
    so): the preflight fails the start and the reload, not the test."""
    ngx = echo_conf(init=preflight('"/nope/libkvrt.so"'))
    ngx.port = free_port()
    ngx.write_conf()
    r = subprocess.run(
        [NGINX, "-t", "-p", str(ngx.prefix), "-c",
         str(ngx.prefix / "conf" / "nginx.conf")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**os.environ, **ngx.env, **preload_env()})
    ran = "nbffi.preflight" in r.stderr + ngx.error_log()
    assert ran == (r.returncode != 0), (r.returncode, r.stderr)
