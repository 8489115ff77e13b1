"""Puts a cfg's "path" entries and virtualenv on sys.path.

sys.path belongs to the interpreter, which every runtime of the process
shares: entries are added in front (path first, then the venv's
site-packages) and never removed, so runtimes with different venvs see
each other's packages behind their own.
"""

from __future__ import annotations

import glob
import os
import site
import sys
import threading
from typing import List

from ._config import Config, ConfigError

_lock = threading.Lock()


def apply(config: Config) -> None:
    with _lock:
        front: List[str] = [os.path.abspath(p) for p in config.path]
        if config.venv is not None:
            front += _venv_site_dirs(config.venv)
        rest = [p for p in sys.path if p not in front]
        sys.path[:] = front + rest


def _venv_site_dirs(venv: str) -> List[str]:
    venv = os.path.abspath(venv)
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        raise ConfigError(f'"venv": {venv} is not a virtualenv '
                          f"(no pyvenv.cfg)")
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_dir = os.path.join(venv, "lib", want, "site-packages")
    if not os.path.isdir(site_dir):
        found = sorted(os.path.basename(os.path.dirname(d)) for d in
                       glob.glob(os.path.join(venv, "lib", "python*",
                                              "site-packages")))
        raise ConfigError(f'"venv": {venv} has no lib/{want}/site-packages '
                          f"(it has {', '.join(found) or 'none'}); this "
                          f"interpreter is Python {sys.version.split()[0]}")
    # addsitedir runs the .pth files and appends; collect what it added
    before = list(sys.path)
    site.addsitedir(site_dir)
    return [site_dir] + [p for p in sys.path if p not in before
                         and p != site_dir]
