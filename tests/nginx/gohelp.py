"""Go runtime libraries, the demo gRPC server and `nginx -s` for the
test_go_* tests.

The go command builds them into <build>/go; its cache makes a rebuild of an
unchanged package take about a second.
"""

import os
import re
import shutil
import subprocess

import pytest

from harness import NGINX, REPO

GO = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
EXAMPLE = REPO / "examples" / "go-grpc"


def go_build(module, pkg, out, shared, core, ldflags=None):
    """Builds pkg of the Go module at REPO/module into out, a c-shared
    library if shared, linking libnbffi from the directory core."""
    cmd = [GO, "build", "-o", str(out)]
    if shared:
        cmd.append("-buildmode=c-shared")
    if ldflags:
        cmd.append(f"-ldflags={ldflags}")
    r = subprocess.run(cmd + [pkg], cwd=REPO / module,
                       env={**os.environ, "CGO_LDFLAGS": f"-L{core}"},
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {pkg} failed:\n{r.stderr}")
    return out


@pytest.fixture(scope="session")
def grpc_lib(nbffi_build):
    """The example's runtime library, libgogrpc.so."""
    return go_build("examples/go-grpc", "./lib",
                    nbffi_build / "go" / "libgogrpc.so", True,
                    nbffi_build / "core")


@pytest.fixture(scope="session")
def life_lib(nbffi_build):
    """libgolife.so (tests/nginx/go): handlers that never return."""
    return go_build("tests/nginx/go", ".", nbffi_build / "go" / "libgolife.so",
                    True, nbffi_build / "core")


@pytest.fixture(scope="session")
def greeter_bin(nbffi_build):
    return go_build("examples/go-grpc", "./server",
                    nbffi_build / "go" / "greeter-server", False,
                    nbffi_build / "core")


class Greeter:
    """A demo gRPC server on a free loopback port."""

    def __init__(self, binary, greeting):
        self.proc = subprocess.Popen(
            [str(binary), "-addr", "127.0.0.1:0", "-greeting", greeting],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on (\S+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"greeter-server said {line!r}")
        self.addr = m.group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def greeter(greeter_bin):
    """greeter(greeting="Hello") starts a server; all stop at teardown."""
    servers = []

    def start(greeting="Hello"):
        servers.append(Greeter(greeter_bin, greeting))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def grpc_nginx(nginx, grpc_lib):
    """grpc_nginx(target, server="", **kw): nginx whose worker loads the
    example's runtime with one connection to target, serving the example's
    locations.conf and the given server block."""
    def start(target, server="", **kw):
        init = (f'require("greeter").init("{grpc_lib}", "{target}")')
        return nginx(init_worker=init, lua_path=[EXAMPLE / "?.lua"],
                     server=f"include {EXAMPLE / 'locations.conf'};\n"
                     + server, **kw)
    return start


def nginx_s(ngx, sig):
    """Runs `nginx -s sig` against ngx, as an operator would."""
    subprocess.run([NGINX, "-p", str(ngx.prefix), "-c",
                    str(ngx.prefix / "conf" / "nginx.conf"), "-s", sig],
                   check=True, capture_output=True, timeout=30,
                   env={**ngx.env, "PATH": "/usr/sbin:/usr/bin:/bin"})
