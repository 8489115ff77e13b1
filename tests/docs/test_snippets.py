"""The snippets of README.md, lua/README.md and docs/*.md run.

Every fenced block with a language is accounted for: run here or by
another test that reads it from the doc (a doc_block call naming it), or
listed in ELSEWHERE with the test that runs the same commands with its own
paths, or in NOT_RUN with the reason.  Blocks without a language are
diagrams and sample output.
"""

import re
import shutil
import subprocess

import pytest

from docblocks import (REPO, blocks, doc_block, doc_block_after,
                       doc_path, run_doc_nginx)

DOCS = ["README.md", "lua/README.md",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]

# (doc, text in the block's first line): the test that runs the same steps
# with its own prefix, tree or paths instead of the system's.
ELSEWHERE = {
    ("docs/install.md", "echo 'deb http://deb.debian.org/debian bookworm-backports"):
        "scripts/suite-install: nbffi_go with NBFFI_GO_FETCH=1 (lib.sh)",
    ("docs/install.md", "python3 -m venv /opt/jdk21"):
        "scripts/suite-java: nbffi_jdk21 (lib.sh), then the virtual-thread tests",
    ("docs/install.md", "meson setup build --prefix=/usr/local"):
        "test_install.py: the installed fixture, into a temporary prefix",
    ("docs/install.md", "luarocks --lua-version=5.1 make"):
        "test_install.py: test_luarocks (--tree) and test_luarocks_local",
    ("docs/install.md", "go mod edit -require"):
        "test_install.py: test_go_module_outside_tree",
    ("docs/install.md", "cd shims/java && mvn -q -B install"):
        "test_install.py: test_java_mvn_install",
    ("docs/install.md", "python3 -m venv venv && venv/bin/pip install"):
        "test_install.py: test_pip_install",
    ("docs/runtime-c.md", "cc -O2 -shared -fPIC -o libhello.so"):
        "test_install.py: test_nginx_from_prefix",
    ("docs/runtime-go.md", 'CGO_CFLAGS="$(pkg-config --cflags nbffi)"'):
        "test_install.py: test_go_module_outside_tree (build and go test)",
    ("docs/runtime-java.md", "cd /path/to/nbffi/shims/java && mvn"):
        "test_install.py: test_java_mvn_install",
    ("docs/runtime-java.md", "mvn -q -B package"):
        "test_install.py: test_java_mvn_install (the doc's Maven project)",
    ("docs/guide-gateways.md", "cd /path/to/nbffi"):
        "test_install.py: test_luarocks (OpenResty's luarocks is not here)",
    ("docs/testing.md", "TEST_NGINX_NBFFI=$PWD"):
        "test_t_example.py runs t/echo.t's blocks (no Test::Nginx here)",
    ("docs/guide-gateways.md", "-- Kong plugin nbffi-echo: each worker"):
        "the file in examples/gateways (test_doc_shows_the_file), run by "
        "test_gateways.py",
    ("docs/guide-gateways.md", "-- Kong plugin nbffi-echo: its per-route"):
        "the file in examples/gateways (test_doc_shows_the_file)",
    ("docs/guide-gateways.md", "-- APISIX plugin nbffi-echo"):
        "the file in examples/gateways (test_doc_shows_the_file), run by "
        "test_gateways.py",
}

NOT_RUN = {
    ("docs/benchmarks.md", ""):
        "benchmarks: minutes of load each; tests never time",
    ("docs/reliability.md", ""):
        "scripts/soak: 10 minutes per language",
    ("docs/install.md", "apt install build-essential"):
        "installs system packages; test_apt_line checks each name",
}


def doc_block_claims():
    """(doc, name) of every doc_block/doc_block_after call in tests/."""
    call = re.compile(r'doc_block(?:_after)?\(\s*"([^"]+)",\s*"([^"]+)"')
    claims = set()
    for py in (REPO / "tests").rglob("*.py"):
        for doc, name in call.findall(py.read_text()):
            claims.add((doc_path(doc), name))
    return claims


def test_every_snippet_is_accounted_for():
    claims = doc_block_claims()
    lost = []
    for doc in DOCS:
        for b in blocks(doc):
            if not b.lang:
                continue
            if any(d == doc and n in b.first for d, n in claims):
                continue
            if any(d == doc and n in b.first
                   for d, n in [*ELSEWHERE, *NOT_RUN]):
                continue
            lost.append(f"{doc}: {b.lang} block '{b.first}'")
    assert not lost, "snippets no test runs:\n" + "\n".join(lost)


def test_readme_nginx_conf(tmp_path, nbffi_build):
    run_doc_nginx(tmp_path / "readme",
                  doc_block_after("README.md", "load_module"))


def test_lua_readme_nginx_conf(tmp_path, nbffi_build):
    run_doc_nginx(tmp_path / "lua",
                  doc_block_after("lua/README.md", "load_module"))


def test_readme_c_abi_declarations(tmp_path):
    """The README's three entry points match the header's types."""
    src = tmp_path / "abi.c"
    src.write_text("#include <nbffi.h>\n"
                   + doc_block("README.md", "unsigned nbffi_runtime_abi"))
    subprocess.run(["cc", "-fsyntax-only", "-Wall", "-Werror",
                    f"-I{REPO / 'core' / 'include'}", str(src)], check=True)


def test_readme_commands_are_the_scripts():
    cmds = [ln.split()[0] for ln in
            doc_block("README.md", "scripts/demo").splitlines()
            if ln.strip() and not ln.startswith(" ")]
    assert cmds == ["scripts/demo", "scripts/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^scripts/test$", ci, re.M), \
        ".ci/run must run the README's scripts/test"


def apt_packages(text):
    """Package names of `apt install ...` commands in text."""
    text = text.replace("\\\n", " ")
    names = []
    for m in re.finditer(r"apt(?:-get)? install ([^\n#]*)", text):
        names += [w for w in m.group(1).split() if not w.startswith("-")]
    return names


def test_apt_line(tmp_path):
    """install.md's apt line names real Debian packages, and every one
    that scripts/demo installs to run all runtimes."""
    line = apt_packages(doc_block("install.md", "apt install build-essential"))
    demo = (REPO / "scripts" / "demo").read_text().replace("\\\n", " ")
    m = re.search(r"nbffi_deps ([^\n]*)", demo)
    assert m, "scripts/demo no longer says what it installs"
    needed = set(m.group(1).split())
    assert needed <= set(line), sorted(needed - set(line))
    if shutil.which("apt-cache"):
        r = subprocess.run(["apt-cache", "show", "--no-all-versions", *line],
                           capture_output=True, text=True)
        known = set(re.findall(r"^Package: (\S+)", r.stdout, re.M))
        assert set(line) <= known, sorted(set(line) - known)


@pytest.mark.parametrize("doc,path", [
    ("guide-gateways.md",
     "examples/gateways/kong/kong/plugins/nbffi-echo/handler.lua"),
    ("guide-gateways.md",
     "examples/gateways/kong/kong/plugins/nbffi-echo/schema.lua"),
    ("guide-gateways.md",
     "examples/gateways/apisix/apisix/plugins/nbffi-echo.lua"),
])
def test_doc_shows_the_file(doc, path):
    """A file the doc shows in full is that file, byte for byte (the
    file is what test_gateways.py runs)."""
    text = (REPO / path).read_text()
    first = text.split("\n", 1)[0]
    assert doc_block(doc, first) == text
