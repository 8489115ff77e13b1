"""A short soak per language (scripts/soak runs the long one): wrk c=100
with mixed payload sizes; zero errors, flat RSS and fds, every task freed.
"""

import os

from soak import HEADER, row, soak

SECONDS = float(os.environ.get("NBFFI_SOAK_SECONDS", "15"))


def test_soak(fault, fault_nginx):
    ngx = fault_nginx(cfg=fault.soak_cfg, log_level="notice")
    res = soak(ngx, fault.lang, SECONDS, 100, warmup=3)
    print("\n" + " ".join(HEADER) + "\n" + " ".join(map(str, row(res))))
    assert not res.problems, row(res)
