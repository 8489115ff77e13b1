"""scripts/demo as a newcomer runs it, in the background of a script
(SIGINT ignored at entry, as bash does for `cmd &`): it serves, its workers
are not root, it prints only the curl lines of the runtimes it runs, it
says how long its steps take, it stops on SIGINT and on SIGTERM (nginx
gone, its prefix removed), and a busy port is named with the way out.
The Go, Python and Java examples are left out (NBFFI_DEMO_SKIP): their
suites run them."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def start_demo(port, tmp_path):
    env = {**os.environ, "NBFFI_DEMO_SKIP": "go,python,java",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "demo"), str(port)], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out = []
    for line in proc.stdout:            # until the banner's last curl line
        out.append(line)
        if "/upper?s=hello" in line:
            break
    else:
        proc.wait(30)
        pytest.fail("the demo did not start:\n" + "".join(out))
    return proc, out


def free_ports():
    """A port p with p+1 free as well."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def demo_calls(port):
    """Calls to the echo runtime in the demo's /metrics, once the worker
    flushed them (once a second)."""
    end = time.monotonic() + 10
    while True:
        status, text = get(port, "/metrics")
        assert status == 200, text
        for f in text_string_to_metric_families(text):
            for s in f.samples:
                if s.name == "nbffi_calls_posted_total" and \
                        s.labels == {"runtime": "echo"} and s.value >= 1:
                    return s.value
        if time.monotonic() > end:
            return 0
        time.sleep(0.1)


def worker_uids(nginx_master):
    uids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))
        if ppid == nginx_master:
            uids.append(int(re.search(r"^Uid:\s*(\d+)", status,
                                      re.M).group(1)))
    return uids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_serves_and_stops(sig, tmp_path):
    port = free_ports()
    proc, out = start_demo(port, tmp_path)
    text = "".join(out)
    try:
        assert re.search(r"building the C parts \(meson, ninja\): done in "
                         r"\d+ s", text), text
        assert "the Go example is skipped" in text
        assert "/hello?name" not in text and "/predict" not in text \
            and "/fetch" not in text, text
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/upper?s=hello", timeout=10) as r:
            assert r.read().decode().strip() == "HELLO"
        assert get(port, "/ready") == (200, "echo: ready\n")
        assert demo_calls(port) >= 1
        [prefix] = list(tmp_path.glob("nbffi-demo.*"))
        master = int((prefix / "nginx.pid").read_text())
        uids = worker_uids(master)
        assert uids, "no nginx worker"
        if "cannot read" not in text:       # the clone is readable
            assert 0 not in uids, uids
    finally:
        proc.send_signal(sig)
        rest = proc.communicate(timeout=60)[0]
    assert "demo: stopped" in rest, rest
    assert not list(tmp_path.glob("nbffi-demo.*")), "prefix left behind"
    assert not Path(f"/proc/{master}").exists(), "nginx still runs"


def test_demo_names_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([str(REPO / "scripts" / "demo"), str(port)],
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert f"port {port} on 127.0.0.1 is busy" in r.stderr, r.stderr
    assert "choose another: scripts/demo PORT" in r.stderr, r.stderr
