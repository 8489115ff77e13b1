"""From a handler spec to the table of methods a runtime serves.

The target named by ``"module:attr"`` is a module (its public functions
defined in that module), a class (instantiated once, with the cfg's
"options" as its one argument when the cfg has that key) or any other
object (its public methods).  Names starting with ``_`` are never exposed;
``close`` is the shutdown hook, called once after the last call; a method
``X_batch`` serves calls to ``X`` in batches.

The interpreter outlives runtimes (it is never finalized), and so does
sys.modules: a runtime started after the handler module's file changed
(``rt:close()`` then ``nbffi.load`` again) re-imports that module, so that
it runs the new code.  Modules it imports are not re-imported.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ._config import BatchOptions, Config, ConfigError, batch_options

BATCH_SUFFIX = "_batch"
CLOSE_HOOK = "close"
_BATCH_ATTR = "__nbffi_batch__"

# module name -> (mtime_ns, size) of its file when a runtime imported it
_stamps: Dict[str, Tuple[int, int]] = {}
_stamps_lock = threading.Lock()


def batch(max_size: int = 64, max_wait_ms: float = 0) -> Callable:
    """Sets the batching options of an ``X_batch`` method.

    ``max_size`` bounds the payloads in one call; ``max_wait_ms`` is how
    long the first call of a batch may wait for more (0: batch only the
    calls already queued, which adds no latency).  The cfg's "batch" key
    overrides both.
    """
    opts = batch_options(max_size, max_wait_ms, "nbffi.batch")

    def mark(fn: Callable) -> Callable:
        setattr(fn, _BATCH_ATTR, opts)
        return fn
    return mark


@dataclass(frozen=True)
class Method:
    fn: Callable[[bytes], Any]
    is_async: bool          # a coroutine or async generator: runs on asyncio
    stream: bool = False    # a generator (plain or async): yields chunks


@dataclass(frozen=True)
class BatchMethod:
    fn: Callable[[list], Any]
    is_async: bool
    opts: BatchOptions


Entry = Union[Method, BatchMethod]


def resolve(config: Config) -> Any:
    """Imports the module and returns the target object."""
    module_name, _, attr = config.handler.partition(":")
    target: Any = _import(module_name)
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    if isinstance(target, type):
        target = target(config.options) if config.has_options else target()
    elif config.has_options:
        raise ConfigError(f'"options" is given but handler '
                          f'{config.handler!r} is not a class')
    return target


def _stamp(module: types.ModuleType) -> Optional[Tuple[int, int]]:
    path = getattr(module, "__file__", None)
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def _import(name: str) -> types.ModuleType:
    """The module, re-imported when its file changed since a runtime
    imported it."""
    with _stamps_lock:
        module = sys.modules.get(name)
        if module is not None and name in _stamps and \
                _stamp(module) != _stamps[name]:
            # the .pyc holds the source's mtime in seconds and its size:
            # an edit within the same second and of the same size would
            # pass for the old code
            cached = getattr(module, "__cached__", None)
            if cached:
                try:
                    os.unlink(cached)
                except OSError:
                    pass
            importlib.invalidate_caches()
            module = importlib.reload(module)
        else:
            module = importlib.import_module(name)
        stamp = _stamp(module)
        if stamp is not None:
            _stamps[name] = stamp
        return module


def methods(target: Any, batch_cfg: Dict[str, Optional[BatchOptions]]) \
        -> Dict[str, Entry]:
    """Maps method names to entries; raises ConfigError if none."""
    found = _routines(target)
    table: Dict[str, Entry] = {}
    for name, fn in found.items():
        if not name.endswith(BATCH_SUFFIX):
            table[name] = method(fn)
    for name, fn in found.items():
        base = name[:-len(BATCH_SUFFIX)]
        if not name.endswith(BATCH_SUFFIX) or not base:
            continue
        if base in batch_cfg and batch_cfg[base] is None:
            if base not in table:
                raise ConfigError(f"batching of {base!r} is off in the cfg "
                                  f"but the handler has no {base!r} method")
            continue
        opts = batch_cfg.get(base) or getattr(fn, _BATCH_ATTR, None) or \
            BatchOptions()
        table[base] = BatchMethod(fn, inspect.iscoroutinefunction(fn), opts)
    stray = sorted(m for m in batch_cfg
                   if m + BATCH_SUFFIX not in found)
    if stray:
        raise ConfigError(f'"batch" names {", ".join(stray)} but the handler '
                          f'has no {stray[0]}{BATCH_SUFFIX} method')
    if not table:
        raise ConfigError(f"handler {target!r} has no public methods")
    return table


def method(fn: Callable) -> Method:
    agen = inspect.isasyncgenfunction(fn)
    return Method(fn, agen or inspect.iscoroutinefunction(fn),
                  agen or inspect.isgeneratorfunction(fn))


def close_hook(target: Any) -> Optional[Callable[[], Any]]:
    hook = getattr(target, CLOSE_HOOK, None)
    return hook if callable(hook) else None


def _routines(target: Any) -> Dict[str, Callable]:
    out = {}
    for name in dir(target):
        if name.startswith("_") or name == CLOSE_HOOK:
            continue
        fn = getattr(target, name)
        if not inspect.isroutine(fn):
            continue
        # a module exposes what it defines, not what it imports
        if isinstance(target, types.ModuleType) and \
                getattr(fn, "__module__", None) != target.__name__:
            continue
        out[name] = fn
    return out
