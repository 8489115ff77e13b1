"""nbffi installed into temporary prefixes, used from there only.

`meson setup --prefix=<tmp>` + `meson install` from a build directory of
its own; the LuaRocks rockspec into a temporary tree; the Python package
into a venv with pip; the jar into the local Maven repository with `mvn
install`; a Go module outside the tree through a `replace` line.  Each
case starts a real nginx whose Lua module, libnbffi and runtime libraries
come from the install (checked in /proc/<worker>/maps: nothing of the
source tree is mapped) and makes calls.  The runtimes are the examples of
docs/runtime-*.md, so the guides are tested too.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nginx"))

sys.path.insert(0, str(REPO / "tests" / "docs"))

from docblocks import (DocNginx, doc_block, doc_block_after,  # noqa: E402
                       expected_requests, run_doc_nginx, running)
from gohelp import GO  # noqa: E402
from harness import lua_module_lines  # noqa: E402


def _nginx_fixtures():
    """tests/nginx/conftest.py as a module: its fixtures start nginx, stop
    it with QUIT and fail on [alert]/[crit]/[emerg]/sanitizer lines."""
    spec = importlib.util.spec_from_file_location(
        "nginx_conftest", REPO / "tests" / "nginx" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_fx = _nginx_fixtures()
nginx = _fx.nginx
balanced = _fx.balanced

LUA = "share/lua/5.1"
SKIP_COPY = shutil.ignore_patterns(".git", "build*", "target", ".venv",
                                   "__pycache__", "*.egg-info",
                                   ".pytest_cache")


@dataclass
class Install:
    prefix: Path
    libdir: Path            # <prefix>/lib/<multiarch>
    build: Path

    @property
    def rtdir(self):        # the runtime libraries
        return self.libdir / "nbffi"

    @property
    def lua_path(self):
        return self.prefix / LUA / "?.lua"

    def built(self, rel):
        """Was rel (e.g. shims/python/libnbffi_python.so) built here?"""
        return (self.build / rel).exists()


def run(cmd, **kw):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                    f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)
    return r.stdout


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    if lua_module_lines() is None:
        pytest.skip("nginx with lua-nginx-module is not installed")
    tmp = tmp_path_factory.mktemp("meson")
    build, prefix = tmp / "build", tmp / "prefix"
    run(["meson", "setup", build, f"--prefix={prefix}"], cwd=REPO)
    run(["ninja", "-C", build])
    run(["meson", "install", "-C", build, "--no-rebuild"])
    libdir = run(["meson", "configure", build], cwd=REPO)
    libdir = re.search(r"^\s*libdir\s+(\S+)", libdir, re.M).group(1)
    return Install(prefix, prefix / libdir, build)


@pytest.fixture(scope="session")
def nbffi_build(installed):
    """Replaces the nginx fixtures' repo build: this build dir."""
    return installed.build


def mapped(pid):
    """Paths of the files mapped into pid."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.add(parts[5].replace(" (deleted)", ""))
    return paths


def assert_loaded_from(ngx, where):
    """Each library of where ({"libx.so": directory}, matching
    libx.so.N... too) is mapped from that directory, and no file of the
    source tree is mapped at all."""
    [pid] = ngx.worker_pids()
    maps = mapped(pid)
    repo = [p for p in maps if p.startswith(f"{REPO}/")]
    assert not repo, f"files of the source tree mapped: {repo}"
    for name, directory in where.items():
        hits = [p for p in maps if Path(p).name.startswith(name)]
        assert hits, f"{name} is not mapped"
        for p in hits:
            assert Path(p).parent == Path(directory), (name, p)


def pkg_config(install, *args):
    env = {**os.environ,
           "PKG_CONFIG_PATH": str(install.libdir / "pkgconfig")}
    return run(["pkg-config", *args, "nbffi"], env=env).split()


# ---- meson install --------------------------------------------------------

def test_layout(installed):
    p, lib = installed.prefix, installed.libdir
    expect = [p / "include" / "nbffi.h", lib / "libnbffi.so",
              lib / "libnbffi.so.0", lib / "pkgconfig" / "nbffi.pc",
              p / LUA / "resty" / "nbffi.lua", installed.rtdir / "libecho.so"]
    if installed.built("shims/python/libnbffi_python.so"):
        expect += [installed.rtdir / "libnbffi_python.so",
                   installed.rtdir / "nbffi" / "__init__.py",
                   installed.rtdir / "nbffi" / "testing.py"]
    if installed.built("shims/java/libnbffi_java.so"):
        expect += [installed.rtdir / "libnbffi_java.so",
                   installed.rtdir / "nbffi.jar"]
    missing = [str(f) for f in expect if not f.exists()]
    assert not missing, missing

    assert (p / LUA / "resty" / "nbffi.lua").read_bytes() == \
        (REPO / "lua" / "resty" / "nbffi.lua").read_bytes()
    assert (p / "include" / "nbffi.h").read_bytes() == \
        (REPO / "core" / "include" / "nbffi.h").read_bytes()
    soname = run(["readelf", "-d", lib / "libnbffi.so"])
    assert "Library soname: [libnbffi.so.0]" in soname
    # nothing installed points back into the build directory
    for so in installed.rtdir.glob("*.so"):
        assert str(installed.build) not in run(["readelf", "-d", so]), so

    assert pkg_config(installed, "--cflags") == [f"-I{p / 'include'}"]
    assert pkg_config(installed, "--libs") == [f"-L{lib}", "-lnbffi"]
    assert pkg_config(installed, "--variable=runtimedir") == \
        [str(installed.rtdir)]


HELLO_C = r"""
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local dir = os.getenv("RT_DIR")
        local echo = assert(nbffi.load("echo", "", { search_path = dir }))
        local hello = assert(nbffi.load("hello", "", { search_path = dir }))
        ngx.say(echo:call("upper", "from the prefix", 5))
        ngx.say(hello:call("hello", "nginx", 5))
        ngx.say((select(2, hello:call("nope", "x", 5))))
        ngx.say(debug.getinfo(nbffi.load, "S").source)
    }
}
"""


def test_nginx_from_prefix(installed, nginx, balanced, tmp_path):
    """The Lua module from <prefix>/share/lua/5.1, libnbffi from
    $NBFFI_LIB, the installed libecho and docs/runtime-c.md's runtime
    (built with pkg-config against the install) by short name."""
    rtdir = tmp_path / "runtimes"
    rtdir.mkdir()
    shutil.copy(installed.rtdir / "libecho.so", rtdir)
    src = tmp_path / "hello.c"
    src.write_text(doc_block("runtime-c.md", "hello.c"))
    run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         "-o", rtdir / "libhello.so", src,
         *pkg_config(installed, "--cflags", "--libs")])

    # docs/runtime-c.md's own nginx.conf, with /srv/nbffi = rtdir
    run_doc_nginx(tmp_path / "doc", doc_block_after(
        "runtime-c.md", "include /etc/nginx/modules-enabled"),
        [*install_subs(installed), ("/srv/nbffi", rtdir)])

    ngx = nginx(server=HELLO_C, lua_path=[installed.lua_path],
                env={"NBFFI_LIB": str(installed.libdir / "libnbffi.so"),
                     "RT_DIR": str(rtdir)})
    r = ngx.get("/t")
    assert r.status == 200, ngx.error_log()[-2000:]
    assert r.text.splitlines() == [
        "FROM THE PREFIX", "hello, nginx",
        "runtime error 2: no such method",
        f"@{installed.prefix / LUA / 'resty' / 'nbffi.lua'}"]
    assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                             "libecho.so": rtdir, "libhello.so": rtdir})
    ngx.assert_log(r"nbffi runtime: hello runtime started")
    balanced(ngx, workers=1)


def install_subs(install):
    """The /usr/local of the docs' nginx.conf files -> the install."""
    return [("/usr/local/lib/x86_64-linux-gnu", install.libdir),
            ("/usr/local/share", install.prefix / "share")]


def test_guide_nginx_conf(installed, tmp_path):
    """docs/guide-nginx.md's complete nginx.conf, on the install."""
    block = doc_block_after("guide-nginx.md", "user www-data;")
    ngx = DocNginx(tmp_path / "guide", block.text, install_subs(installed))
    with running(ngx):
        check_requests(ngx, expected_requests(block.after))
        assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                                 "libecho.so": installed.rtdir})


def check_requests(ngx, wants):
    assert wants, "the doc shows no `curl ...` → `...` line"
    for path, want in wants:
        r = ngx.get(path)
        assert (r.status, r.text) == (200, want + "\n"), \
            ngx.error_log()[-2000:]


def test_guide_debian_layout(installed, tmp_path):
    """guide-nginx.md's three edits of Debian's /etc/nginx, in a copy of
    the stock /etc/nginx: the env line in nginx.conf's main context,
    conf.d/nbffi.conf, sites-enabled/nbffi; the stock default site off."""
    stock = Path("/etc/nginx")
    if not (stock / "nginx.conf").exists() or \
            not (stock / "modules-enabled").is_dir():
        pytest.skip("no Debian /etc/nginx here")
    etc = tmp_path / "etc"
    shutil.copytree(stock, etc, symlinks=False)
    for f in (etc / "sites-enabled").iterdir():
        f.unlink()
    conf = (etc / "nginx.conf").read_text()
    env_line = doc_block("guide-nginx.md", "# nbffi: workers keep only")
    # next to the modules-enabled include, in the main context
    inc = "include /etc/nginx/modules-enabled/*.conf;"
    assert inc in conf
    conf = conf.replace(inc, inc + "\n" + env_line)
    (etc / "conf.d" / "nbffi.conf").write_text(
        doc_block("guide-nginx.md", "# nbffi: the module"))
    (etc / "sites-available" / "nbffi").write_text(
        doc_block_after("guide-nginx.md", "server {").text)
    (etc / "sites-enabled" / "nbffi").symlink_to(
        etc / "sites-available" / "nbffi")
    # the machine's own paths -> the test's
    logs = tmp_path / "logs"
    logs.mkdir()
    for f in [etc / "nginx.conf", etc / "conf.d" / "nbffi.conf",
              etc / "sites-available" / "nbffi",
              *(etc / "modules-enabled").iterdir()]:
        text = conf if f.name == "nginx.conf" else f.read_text()
        text = (text.replace("/etc/nginx", str(etc))
                .replace("/var/log/nginx", str(logs))
                .replace("/run/nginx.pid", str(logs / "nginx.pid"))
                .replace("load_module modules/",
                         "load_module /usr/lib/nginx/modules/"))
        f.unlink()
        f.write_text(text)
    ngx = DebianNginx(tmp_path / "prefix", etc, install_subs(installed))
    with running(ngx):
        check_requests(ngx, expected_requests(
            doc_block_after("guide-nginx.md", "server {").after))
        assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                                 "libecho.so": installed.rtdir})


class DebianNginx(DocNginx):
    """nginx -c <copy of /etc/nginx>/nginx.conf: the config is the copy's,
    with the install's paths and the test's port, user, pid and logs."""

    def __init__(self, prefix, etc, subs):
        super().__init__(prefix, "", subs)
        self.etc = etc

    def write_conf(self):
        site = self.etc / "sites-available" / "nbffi"
        text = site.read_text()
        for old, new in self.subs:
            text = text.replace(old, str(new))
        site.write_text(text.replace("listen 127.0.0.1:8080;",
                                     f"listen 127.0.0.1:{self.port};"))
        nbffi = self.etc / "conf.d" / "nbffi.conf"
        text = nbffi.read_text()
        for old, new in self.subs:
            text = text.replace(old, str(new))
        nbffi.write_text(text)
        main = self.etc / "nginx.conf"
        text = main.read_text()
        for old, new in self.subs:
            text = text.replace(old, str(new))
        if os.geteuid() == 0:
            text = text.replace("user www-data;", "user root;")
        text = re.sub(r"^worker_processes .*;", "worker_processes 1;", text,
                      flags=re.M)
        if not text.startswith("daemon off;"):
            text = (f"daemon off;\nerror_log {self.prefix}/logs/error.log"
                    f" info;\n{text}")
        main.write_text(text)
        for d in ("conf", "logs"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        (self.prefix / "conf" / "nginx.conf").write_text(text)


# ---- LuaRocks -------------------------------------------------------------

ROCK = r"""
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = assert(nbffi.load("echo", "",
                                     { search_path = os.getenv("RT_DIR") }))
        ngx.say(rt:call("upper", "from the rock", 5))
    }
}
"""


@pytest.mark.parametrize("where", ["tree", "local"])
def test_luarocks(where, nginx, tmp_path):
    """`luarocks make` of the rockspec into a tree (--tree) or a user's
    own tree (--local: ~/.luarocks, as a user without root does), then
    libnbffi found through lua_package_cpath (no NBFFI_LIB), as the rock
    lays it out."""
    if shutil.which("luarocks") is None:
        pytest.skip("luarocks is not installed")
    src, home = tmp_path / "src", tmp_path / "home"
    home.mkdir()
    shutil.copytree(REPO, src, ignore=SKIP_COPY)
    [spec] = src.glob("*.rockspec")
    env = {**os.environ, "HOME": str(home)}
    if where == "tree":
        tree = tmp_path / "tree"
        flag = f"--tree={tree}"
    else:
        tree = home / ".luarocks"
        flag = "--local"
    run(["luarocks", "--lua-version=5.1", "lint", spec])
    run(["luarocks", "--lua-version=5.1", flag, "make", spec], cwd=src,
        env=env)
    rock = Path(run(["luarocks", "--lua-version=5.1", flag, "show",
                     "--rock-dir", "lua-resty-nbffi"], env=env).strip())
    assert rock.is_relative_to(tree), rock
    cpath = tree / "lib" / "lua" / "5.1"

    ngx = nginx(server=ROCK, lua_path=[tree / LUA / "?.lua"],
                http=f'lua_package_cpath "{cpath}/?.so;;";',
                env={"NBFFI_LIB": "",
                     "RT_DIR": str(rock / "nbffi" / "lib" / "nbffi")})
    r = ngx.get("/t")
    assert (r.status, r.text) == (200, "FROM THE ROCK\n"), \
        ngx.error_log()[-2000:]
    assert_loaded_from(ngx, {"libnbffi.so": cpath,
                             "libecho.so": rock / "nbffi" / "lib" / "nbffi"})


# ---- Python ---------------------------------------------------------------

PY = r"""
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local lib = os.getenv("PY_LIB")
        local hello = assert(nbffi.load(lib, os.getenv("PY_CFG")))
        local where = assert(nbffi.load(lib, os.getenv("PY_WHERE")))
        ngx.say(hello:call("hello", "nginx", 10))
        ngx.say(hello:call("hello_later", "you", 10))
        ngx.say((select(2, hello:call("hello", "", 10))))
        ngx.say(where:call("where", "", 10))
    }
}
"""


def test_python_from_prefix(installed, nginx, tmp_path):
    """The installed libnbffi_python.so imports the nbffi package installed
    next to it and runs docs/runtime-python.md's handler."""
    if not installed.built("shims/python/libnbffi_python.so"):
        pytest.skip("the Python shim was not built (python3-dev missing)")
    app = tmp_path / "app"
    app.mkdir()
    (app / "hello.py").write_text(doc_block("runtime-python.md", "hello.py"))
    (app / "where.py").write_text(
        "import nbffi\n\ndef where(payload):\n    return nbffi.__file__\n")
    path = f'"path": ["{app}"]'
    ngx = nginx(server=PY, lua_path=[installed.lua_path], env={
        "NBFFI_LIB": str(installed.libdir / "libnbffi.so"),
        "PY_LIB": str(installed.rtdir / "libnbffi_python.so"),
        "PY_CFG": '{"handler": "hello:Greeter", %s, '
                  '"options": {"greeting": "hi"}}' % path,
        "PY_WHERE": '{"handler": "where", %s}' % path})
    r = ngx.get("/t")
    assert r.status == 200, ngx.error_log()[-2000:]
    assert r.text.splitlines() == [
        "hi, nginx", "hi, you", "runtime error 400: empty name",
        str(installed.rtdir / "nbffi" / "__init__.py")]
    assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                             "libnbffi_python.so": installed.rtdir})
    # docs/runtime-python.md's own nginx.conf, with /srv/app = app
    run_doc_nginx(tmp_path / "doc", doc_block_after(
        "runtime-python.md", "include /etc/nginx/modules-enabled"),
        [*install_subs(installed), ("/srv/app", app)])


def git_status(path):
    return run(["git", "status", "--porcelain", "--ignored", "--", path],
               cwd=REPO)


def test_pip_install(tmp_path):
    """pip installs the package from the clone into a venv, leaving no
    file in the clone (an out-of-tree build); py.typed comes along;
    docs/runtime-python.md's test passes there with nbffi.testing."""
    src = REPO / "shims" / "python"
    before = git_status(src)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         src])
    assert git_status(src) == before, "pip install left files in the clone"
    site = next(venv.glob("lib/python3*/site-packages/nbffi"))
    assert (site / "py.typed").exists()
    assert not (site / "meson.build").exists()
    app = tmp_path / "app"
    app.mkdir()
    (app / "hello.py").write_text(doc_block("runtime-python.md", "hello.py"))
    (app / "test_hello.py").write_text(
        doc_block("runtime-python.md", "test_hello.py"))
    out = run([py, "-c", "import nbffi, test_hello; test_hello.test_hello();"
               " print(nbffi.__file__)"], cwd=app)
    assert out.strip() == str(next(venv.glob(
        "lib/python3*/site-packages/nbffi/__init__.py")))


# ---- Go -------------------------------------------------------------------

GO_LOC = r"""
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = assert(nbffi.load(os.getenv("GO_LIB"), "hi"))
        ngx.say(rt:call("hello", "nginx", 10))
        ngx.say((select(2, rt:call("hello", "", 10))))
    }
}
"""


def test_go_module_outside_tree(installed, nginx, tmp_path):
    """docs/runtime-go.md's module, outside the tree, requires the shim
    through a replace line and builds with pkg-config's flags."""
    if not Path(GO).exists() and shutil.which(GO) is None:
        pytest.skip("no go command")
    mod = tmp_path / "hello"
    mod.mkdir()
    (mod / "main.go").write_text(doc_block("runtime-go.md", "main.go"))
    gomod = doc_block("runtime-go.md", "go.mod").split("\n", 1)[1]
    (mod / "go.mod").write_text(gomod.replace("/path/to/nbffi", str(REPO)))
    lib = tmp_path / "libhello.so"
    env = {**os.environ, "GOFLAGS": "-buildvcs=false",
           "CGO_CFLAGS": " ".join(pkg_config(installed, "--cflags")),
           "CGO_LDFLAGS": " ".join(pkg_config(installed, "--libs"))}
    run([GO, "build", "-buildmode=c-shared", "-o", lib, "."], cwd=mod,
        env=env)

    ngx = nginx(server=GO_LOC, lua_path=[installed.lua_path],
                env={"NBFFI_LIB": str(installed.libdir / "libnbffi.so"),
                     "GO_LIB": str(lib)})
    r = ngx.get("/t")
    assert r.status == 200, ngx.error_log()[-2000:]
    assert r.text.splitlines() == ["hi, nginx",
                                   "runtime error 400: empty name"]
    assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                             "libhello.so": tmp_path})
    # docs/runtime-go.md's own nginx.conf, with /srv/nbffi = tmp_path
    run_doc_nginx(tmp_path / "doc", doc_block_after(
        "runtime-go.md", "include /etc/nginx/modules-enabled"),
        [*install_subs(installed), ("/srv/nbffi", tmp_path)])

    # the doc's go test of the handlers, with nbffitest
    (mod / "hello_test.go").write_text(
        doc_block("runtime-go.md", "hello_test.go"))
    env["LD_LIBRARY_PATH"] = str(installed.libdir)
    out = run([GO, "test", "-count=1", "-v", "./..."], cwd=mod, env=env)
    assert "--- PASS: TestHello" in out, out


# ---- Java -----------------------------------------------------------------

JAVA_LOC = r"""
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = assert(nbffi.load(os.getenv("JAVA_LIB"),
                                     os.getenv("JAVA_CFG")))
        ngx.say(rt:call("hello", "nginx", 20))
        ngx.say(rt:call("hello_later", "you", 20))
        ngx.say((select(2, rt:call("hello", "", 20))))
    }
}
"""


def test_java_mvn_install(installed, nginx, tmp_path):
    """`mvn install` puts the jar into the local Maven repository;
    docs/runtime-java.md's handler compiles against that jar and runs in
    the installed libnbffi_java.so."""
    if not installed.built("shims/java/libnbffi_java.so"):
        pytest.skip("the Java shim was not built (no JDK)")
    if shutil.which("mvn") is None:
        pytest.skip("no mvn")
    src = tmp_path / "shim"
    shutil.copytree(REPO / "shims" / "java", src, ignore=SKIP_COPY)
    run(["mvn", "-q", "-B", "-Dstyle.color=never", "-Dmaven.test.skip=true",
         "install"], cwd=src)
    jar = Path.home() / ".m2/repository/io/nbffi/nbffi/0.2.0/nbffi-0.2.0.jar"
    assert jar.exists()

    # docs/runtime-java.md's Maven project: its pom, handler and JUnit test
    # (io.nbffi.TestRuntime), built by this machine's Maven
    app = tmp_path / "app"
    (app / "src/main/java/demo").mkdir(parents=True)
    (app / "src/test/java/demo").mkdir(parents=True)
    (app / "pom.xml").write_text(doc_block("runtime-java.md", "<?xml"))
    (app / "src/main/java/demo/Hello.java").write_text(
        doc_block("runtime-java.md", "Hello.java"))
    (app / "src/test/java/demo/HelloTest.java").write_text(
        doc_block("runtime-java.md", "HelloTest.java"))
    run(["mvn", "-q", "-B", "-Dstyle.color=never", "package"], cwd=app)
    report = app / "target/surefire-reports/demo.HelloTest.txt"
    assert "Tests run: 1, Failures: 0, Errors: 0" in report.read_text()
    classes = app / "target" / "classes"

    # user code only: the installed runtime brings the nbffi jar beside it
    cfg = f"class=demo.Hello\nclasspath={classes}\narg.greeting=hi\n"
    ngx = nginx(server=JAVA_LOC, lua_path=[installed.lua_path],
                env={"NBFFI_LIB": str(installed.libdir / "libnbffi.so"),
                     "JAVA_LIB": str(installed.rtdir / "libnbffi_java.so"),
                     "JAVA_CFG": cfg})
    r = ngx.get("/t", timeout=60)
    assert r.status == 200, ngx.error_log()[-2000:]
    assert r.text.splitlines() == ["hi, nginx", "hi, you",
                                   "runtime error 400: empty name"]
    assert_loaded_from(ngx, {"libnbffi.so": installed.libdir,
                             "libnbffi_java.so": installed.rtdir})
    # docs/runtime-java.md's own nginx.conf, /srv/app = the Maven project
    run_doc_nginx(tmp_path / "doc", doc_block_after(
        "runtime-java.md", "include /etc/nginx/modules-enabled"),
        [*install_subs(installed), ("/srv/app", app),
         ("/root/.m2", Path.home() / ".m2")], timeout=60)
