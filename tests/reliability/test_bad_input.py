"""Bad input: the Lua API fuzzed with random argument types, sizes, NUL
bytes, huge method names and payloads, inside a real worker (see
lua/fuzz_api.lua): no crash, and each input class ends in its documented
error.  And the Python shim's cfg parser (pure Python; the C parsers are
fuzzed with libFuzzer in tests/fuzz)."""

import json
import os
import random
import sys

import pytest

from conftest import fault_nginx_kwargs
from harness import REPO

ROUNDS = int(os.environ.get("NBFFI_FUZZ_ROUNDS", "50"))
OPS = 400                       # operations per round (one request)
FUZZ = """
location = /fuzz { content_by_lua_block { require("fuzz_api").run() } }
"""


def test_lua_api_fuzz(fault_runtimes, nginx):
    # The API is the same for every language: fuzz it over the C runtime.
    # not debug: a runaway call would fill the disk with log lines
    ngx = nginx(**fault_nginx_kwargs(fault_runtimes("c"), server=FUZZ,
                                     log_level="warn"))
    [pid] = ngx.worker_pids()
    seed = int(os.environ.get("NBFFI_FUZZ_SEED", random.randrange(1 << 30)))
    classes, mismatches = {}, []
    for r in range(ROUNDS):
        resp = ngx.get(f"/fuzz?seed={seed + r}&n={OPS}", timeout=120)
        assert resp.status == 200, (seed + r, resp.text[-2000:])
        for line in resp.text.splitlines():
            cols = line.split("\t")
            if cols[0] == "MISMATCH":
                mismatches.append((seed + r, *cols[1:]))
            else:
                classes[cols[1]] = classes.get(cols[1], 0) + int(cols[0])
    print(f"\nseed {seed}: {sum(classes.values())} operations:",
          json.dumps(classes, sort_keys=True))
    # the same worker served every round: no crash
    assert ngx.worker_pids() == [pid]
    assert ngx.get("/call?m=echo&p=alive").body == b"alive"
    assert mismatches == [], f"seed {seed}: " + "\n".join(
        map(str, mismatches[:30]))


def test_python_cfg_fuzz():
    sys.path.insert(0, str(REPO / "shims" / "python"))
    try:
        from nbffi import _config
    except ImportError as e:
        pytest.skip(f"the nbffi Python package does not import: {e}")
    rng = random.Random(int(os.environ.get("NBFFI_FUZZ_SEED", "1")))
    pieces = [b"{", b"}", b'"handler"', b'"path"', b'"venv"', b'"batch"',
              b'"options"', b'"log_level"', b'"close_timeout"', b":", b",",
              b"[", b"]", b'"m:A"', b'"x"', b"1", b"-1", b"1e999", b"null",
              b"true", b"\x00", b"\xff", b" ", b'"\\ud800"', b"NaN"]
    for _ in range(20000):
        if rng.random() < 0.3:
            cfg = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            cfg = b"".join(rng.choice(pieces)
                           for _ in range(rng.randrange(12)))
        try:
            _config.parse(cfg)
        except _config.ConfigError as e:
            assert str(e), cfg
