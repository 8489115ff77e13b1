"""The fenced code blocks of the docs, and nginx running them.

A doc's nginx.conf block runs as written, with only these edits, which
stand for the reader's own machine (see DocNginx):
  - the placeholders: /path/to/nbffi (a clone: this one), and what a test
    passes (an install prefix for /usr/local, a directory for /srv/...);
  - listen 127.0.0.1:8080 -> a free port; worker_processes auto -> 1;
  - include /etc/nginx/modules-enabled/*.conf -> the same load_module
    lines with absolute paths (Debian's are relative to its prefix);
  - user www-data -> root when the tests run as root (their files are
    root's); none given -> user root as well, for the same reason;
  - daemon off, a pid file and the error log in the test's prefix first.
The expected replies are the doc's own "`curl 'URL'` -> `OUT`" lines.
"""

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nginx"))

from harness import Nginx, lua_module_lines  # noqa: E402

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[^\n]*\n", re.S | re.M)
CURL = re.compile(r"`curl '?(?:localhost|127\.0\.0\.1)(?::8080)?"
                  r"(/[^'`\s]*)'?`\s*→\s*`([^`]*)`")


@dataclass
class Block:
    doc: str            # path relative to the repo
    lang: str
    text: str
    after: str          # the doc's text up to the next block

    @property
    def first(self):
        return self.text.split("\n", 1)[0]


def blocks(doc):
    """The fenced blocks of REPO/doc, in order."""
    text = (REPO / doc).read_text()
    found = list(FENCE.finditer(text))
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out.append(Block(doc, m.group(1), m.group(2), text[m.end():end]))
    return out


def doc_path(doc):
    """README.md and paths with a / are the repo's; other names docs/'s."""
    return doc if "/" in doc or doc == "README.md" else f"docs/{doc}"


def doc_block(doc, name):
    """The block of doc (see doc_path) whose first line contains name."""
    path = doc_path(doc)
    for b in blocks(path):
        if name in b.first:
            return b.text
    raise AssertionError(f"no code block for {name} in {path}")


def doc_block_after(doc, name):
    """The Block (with the doc's text after it), like doc_block."""
    path = doc_path(doc)
    for b in blocks(path):
        if name in b.first:
            return b
    raise AssertionError(f"no code block for {name} in {path}")


def expected_requests(after):
    """[(path, reply)] from the doc's `curl 'URL'` -> `OUT` lines."""
    return CURL.findall(after)


class DocNginx(Nginx):
    """nginx running a doc's complete nginx.conf (edits: module doc)."""

    def __init__(self, prefix, text, subs=(), env=None):
        super().__init__(prefix, env=env)
        self.text = text
        self.subs = [("/path/to/nbffi", str(REPO)), *subs]

    def write_conf(self):
        text = self.text
        for old, new in self.subs:
            text = text.replace(old, str(new))
        text = (text
                .replace("listen 127.0.0.1:8080;",
                         f"listen 127.0.0.1:{self.port};")
                .replace("worker_processes auto;", "worker_processes 1;")
                .replace("include /etc/nginx/modules-enabled/*.conf;",
                         lua_module_lines()))
        if os.geteuid() == 0:
            if "user www-data;" in text:
                text = text.replace("user www-data;", "user root;")
            elif not re.search(r"^user ", text, re.M):
                text = "user root;\n" + text
        text = (f"daemon off;\npid {self.prefix}/logs/nginx.pid;\n"
                f"error_log {self.prefix}/logs/error.log info;\n{text}")
        for d in ("conf", "logs"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        (self.prefix / "conf" / "nginx.conf").write_text(text)


@contextmanager
def running(ngx, timeout=10):
    """Starts ngx; at the end stops it with QUIT and fails on SIGKILL or
    on bad error-log lines."""
    ngx.start(timeout=timeout)
    try:
        yield ngx
    finally:
        assert ngx.quit(), "nginx needed SIGKILL after QUIT"
    assert not ngx.bad_lines(), ngx.bad_lines()


def run_doc_nginx(prefix, block, subs=(), env=None, timeout=30):
    """Starts block's nginx.conf, makes the requests its doc names, checks
    the replies, stops nginx with QUIT; fails on bad error-log lines."""
    wants = expected_requests(block.after)
    assert wants, f"{block.doc}: no `curl ...` → `...` line after the block"
    with running(DocNginx(prefix, block.text, subs, env), timeout) as ngx:
        for path, want in wants:
            r = ngx.get(path, timeout=timeout)
            assert (r.status, r.text) == (200, want + "\n"), \
                (path, r.status, r.text, ngx.error_log()[-3000:])
    return ngx
