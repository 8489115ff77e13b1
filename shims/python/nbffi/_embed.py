"""The entry points of the C loader (libnbffi_python.so), also used by
nbffi.testing: ``start`` on the runtime thread, then ``serve``; ``stop``
from fini, on another thread, once the queue is closed; ``check`` for
nbffi_preflight(), in a short-lived process of its own."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional, Tuple

from . import _handler, _log, _paths
from ._config import ConfigError, parse
from ._errors import format_exception
from ._serve import Server


def start(queue: Any, cfg: bytes) -> Tuple[Optional[Server], str]:
    """Parses cfg, sets up sys.path and logging, imports the handler.

    Returns (server, "") or (None, error text): the text of a ConfigError
    alone, the full traceback of anything else (the handler's import).
    """
    config = None
    try:
        config = parse(cfg)
        _paths.apply(config)
        _log.bind(queue, config.log_level)
        target = _handler.resolve(config)
        table = _handler.methods(target, config.batch)
    except BaseException as exc:
        _log.unbind(queue)
        where = f"handler {config.handler!r}: " if config else ""
        if isinstance(exc, ConfigError):
            return None, f"python cfg: {where}{exc}"
        return None, f"python: cannot load {where}{format_exception(exc)}"
    return Server(queue, config, target, table), ""


def check(cfg: bytes) -> str:
    """What start would fail on before any handler code runs: the cfg, its
    "path" directories and "venv", the handler's module on sys.path.
    "" when fine, else the error text (as start words it)."""
    config = None
    try:
        config = parse(cfg)
        for p in config.path:
            if not os.path.isdir(p):
                raise ConfigError(f'"path": {p} is not a directory')
        _paths.apply(config)
        module = config.handler.partition(":")[0]
        # a package's __init__ runs to find a submodule: only the top one
        # is looked up, so that no handler code runs here
        top = module.split(".")[0]
        if importlib.util.find_spec(top) is None:
            raise ModuleNotFoundError(f"No module named {top!r}")
    except BaseException as exc:
        where = f"handler {config.handler!r}: " if config else ""
        if isinstance(exc, ConfigError):
            return f"python cfg: {where}{exc}"
        return f"python: cannot load {where}{type(exc).__name__}: {exc}"
    return ""


def serve(server: Server) -> None:
    """Serves until the queue is closed and every call is answered."""
    try:
        server.serve()
    finally:
        _log.unbind(server.queue)


def stop(server: Server, deadline_ns: int) -> None:
    """Makes serving hurry as deadline_ns (time.monotonic_ns clock, 0: none)
    nears; returns once it ended or the runtime thread was interrupted."""
    with _log.routed(server.queue):
        server.stop(deadline_ns)
