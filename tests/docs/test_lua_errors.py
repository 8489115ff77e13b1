"""lua/README.md lists every error string resty.nbffi returns, raises or
logs, and every text of libnbffi's error table (nbffi_strerror), which the
module passes on.  The strings are taken from the sources mechanically:
after a change to the module's errors, run
    python3 -m pytest tests/docs/test_lua_errors.py
to see what the doc lacks."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "lua" / "resty" / "nbffi.lua"
HEADER = REPO / "core" / "include" / "nbffi.h"
DOC = REPO / "lua" / "README.md"

# Where a message starts: error(...), return [nil,] "...", a log call.
START = re.compile(
    r"""\b(?:error\s*\(\s*(?:str_format\s*\(\s*)?"""
    r"""|return\s+(?:nil\s*,\s*)?"""
    r"""|(?:ngx_|exit_)?log\s*\(\s*[A-Z]+\s*,\s*)(?="|')""")
LITERAL = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
CONCAT = re.compile(r"\s*\.\.\s*")


def leading_text(src, pos):
    """The string literals joined by .. from pos on, until the first
    non-literal operand: the fixed head of the message."""
    text = ""
    while True:
        m = LITERAL.match(src, pos)
        if not m:
            return text
        text += re.sub(r"\\(.)", r"\1", m.group(1)[1:-1])
        pos = m.end()
        c = CONCAT.match(src, pos)
        if not c:
            return text
        pos = c.end()


def messages():
    src = MODULE.read_text()
    found = set()
    for m in START.finditer(src):
        head = leading_text(src, m.end())
        head = head.split("%")[0]           # up to the first format spec
        head = re.sub(r"\s+", " ", head).strip()
        if len(head) >= 4:
            found.add(head)
    return found


def table_texts():
    return set(re.findall(r'XX\(\w+,\s*-?\d+,\s*"([^"]+)"\)',
                          HEADER.read_text()))


def doc_text():
    return re.sub(r"\s+", " ", DOC.read_text())


def test_the_sources_have_messages():
    # the extraction itself works: known messages of each kind are found
    found = messages()
    assert "queue full" in found                           # return nil
    assert "bad argument #1 to 'call' (runtime expected; use rt:call)" \
        in found                                            # error()
    assert "nbffi: worker exit: tasks allocated=" in found  # log()
    assert len(table_texts()) >= 10


def test_every_module_message_is_documented():
    doc = doc_text()
    missing = sorted(m for m in messages() if m not in doc)
    assert not missing, "lua/README.md lacks: " + "; ".join(missing)


def test_every_libnbffi_error_text_is_documented():
    doc = doc_text()
    missing = sorted(t for t in table_texts() if t not in doc)
    assert not missing, "lua/README.md lacks: " + "; ".join(missing)
