"""The cfg of a Python runtime: the bytes given to ``nbffi.load``.

Either a handler spec alone (``"module:attr"``) or a JSON object::

    {
      "handler": "module:attr",          required
      "path": ["/dir", ...],             prepended to sys.path
      "venv": "/path/to/venv",           its site-packages go on sys.path
      "options": <any JSON>,             passed to a handler class
      "batch": {"X": {"max_size": 64, "max_wait_ms": 2} | false},
      "log_level": "INFO",               root logger level
      "close_timeout": 30                seconds handlers get after close
    }                                    (less if the host's deadline is
                                         nearer), see _serve.stop_times
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

_KEYS = {"handler", "path", "venv", "options", "batch", "log_level",
         "close_timeout"}


class ConfigError(ValueError):
    """The cfg is malformed; the message says which key and why."""


@dataclass(frozen=True)
class BatchOptions:
    max_size: int = 64
    max_wait: float = 0.0      # seconds; 0: batch only what is queued


@dataclass(frozen=True)
class Config:
    handler: str
    path: Tuple[str, ...] = ()
    venv: Optional[str] = None
    options: Any = None
    has_options: bool = False
    # method -> options, or None where the cfg turns batching off
    batch: Dict[str, Optional[BatchOptions]] = field(default_factory=dict)
    log_level: int = logging.INFO
    close_timeout: float = 30.0


def parse(cfg: bytes) -> Config:
    try:
        text = cfg.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cfg is not UTF-8: {exc}") from None
    if not text:
        raise ConfigError('cfg is empty: name a handler, e.g. "module:Class"')
    if not text.startswith("{"):
        return Config(handler=_handler_spec(text))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cfg is not valid JSON: {exc}") from None
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown cfg key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(_KEYS))}")
    if "handler" not in obj:
        raise ConfigError('cfg lacks "handler" ("module:attr")')
    return Config(
        handler=_handler_spec(obj["handler"]),
        path=_path(obj.get("path", [])),
        venv=_optional_str(obj, "venv"),
        options=obj.get("options"),
        has_options="options" in obj,
        batch=_batch(obj.get("batch", {})),
        log_level=_log_level(obj.get("log_level", "INFO")),
        close_timeout=_seconds(obj, "close_timeout", 30.0),
    )


def _handler_spec(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'"handler" must be a non-empty string '
                          f'"module" or "module:attr", got {value!r}')
    module, _, attr = value.strip().partition(":")
    if not module or (":" in value and not attr):
        raise ConfigError(f'"handler" must be "module" or "module:attr", '
                          f'got {value!r}')
    return value.strip()


def _path(value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or \
            not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f'"path" must be a list of directories, '
                          f'got {value!r}')
    return tuple(value)


def _optional_str(obj: dict, key: str) -> Optional[str]:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f'"{key}" must be a non-empty string, '
                          f'got {value!r}')
    return value


def _batch(value: Any) -> Dict[str, Optional[BatchOptions]]:
    if not isinstance(value, dict):
        raise ConfigError(f'"batch" must map method names to options or '
                          f'false, got {value!r}')
    out: Dict[str, Optional[BatchOptions]] = {}
    for method, opts in value.items():
        if opts is False:
            out[method] = None
            continue
        if not isinstance(opts, dict) or \
                set(opts) - {"max_size", "max_wait_ms"}:
            raise ConfigError(f'"batch"."{method}" must be false or '
                              f'{{"max_size": N, "max_wait_ms": MS}}, '
                              f'got {opts!r}')
        out[method] = batch_options(opts.get("max_size", 64),
                                    opts.get("max_wait_ms", 0),
                                    f'"batch"."{method}"')
    return out


def batch_options(max_size: Any, max_wait_ms: Any, where: str) -> \
        BatchOptions:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or \
            max_size < 1:
        raise ConfigError(f"{where}: max_size must be an int >= 1, "
                          f"got {max_size!r}")
    if isinstance(max_wait_ms, bool) or \
            not isinstance(max_wait_ms, (int, float)) or max_wait_ms < 0:
        raise ConfigError(f"{where}: max_wait_ms must be a number >= 0, "
                          f"got {max_wait_ms!r}")
    return BatchOptions(max_size=max_size, max_wait=max_wait_ms / 1000.0)


def _log_level(value: Any) -> int:
    level = logging.getLevelName(value.upper()) \
        if isinstance(value, str) else None
    if not isinstance(level, int):
        raise ConfigError(f'"log_level" must be one of DEBUG, INFO, '
                          f'WARNING, ERROR, CRITICAL, got {value!r}')
    return level


def _seconds(obj: dict, key: str, default: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            value < 0:
        raise ConfigError(f'"{key}" must be a number of seconds >= 0, '
                          f'got {value!r}')
    return float(value)
