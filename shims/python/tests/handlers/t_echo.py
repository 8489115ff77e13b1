"""Sync handler module for the loader tests (module target)."""

import logging
import os
import signal
import threading

import nbffi

log = logging.getLogger("t_echo")
shared = {}


def echo(payload):
    return payload


def reverse(payload):
    # str replies are sent as UTF-8
    return payload.decode("utf-8")[::-1]


def grüß(payload):
    return "grüß " + payload.decode("utf-8")


def boom(payload):
    raise ValueError("boom: " + payload.decode())


def refuse(payload):
    raise nbffi.Error("refused " + payload.decode(), status=7)


def wrong(payload):
    return 42


def nothing(payload):
    return None


def grow(payload):
    # payload: decimal size; reply: that many bytes of a known pattern
    return bytes(range(256)) * (int(payload) // 256)


def warn(payload):
    log.warning("warned %s", payload.decode())
    log.debug("debug %s", payload.decode())
    return b"ok"


def put(payload):
    shared["value"] = payload
    return b"ok"


def get(payload):
    return shared.get("value", b"")


def pid(payload):
    return str(os.getpid())


def is_main(payload):
    return str(threading.current_thread() is threading.main_thread())


def trap(payload):
    # a runtime thread is not the interpreter's main thread: refused
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError as exc:
        return str(exc)
    return "installed"
