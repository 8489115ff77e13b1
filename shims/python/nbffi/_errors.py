"""Error replies: status codes and the text an exception turns into."""

from __future__ import annotations

import importlib
import os
import traceback
from typing import Tuple

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB_DIR = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep

STATUS_ERROR = 1
"""A handler raised: the reply is the exception's type, message, traceback."""

STATUS_NO_METHOD = 2
"""The handler has no method of the called name."""


class Error(Exception):
    """Raise from a handler to reply with ``status`` and ``message`` only.

    Use it for expected failures (bad input) whose traceback would be noise
    to the caller.  ``status`` must be a positive int; nbffi reserves the
    negative ones.
    """

    def __init__(self, message: str, status: int = STATUS_ERROR):
        if not isinstance(status, int) or status <= 0:
            raise ValueError(f"status must be a positive int, got {status!r}")
        super().__init__(message)
        self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class Interrupted(BaseException):
    """Raised in a handler still running when its runtime is stopped.

    When the runtime is closed, the calls already queued are still served;
    as the host's close deadline nears, ``async`` handlers are cancelled
    (``asyncio.CancelledError``), then this is raised in the runtime's
    thread, wherever its Python code is, to end a handler that never
    returns.  A handler blocked in C code (``time.sleep``, a C extension)
    sees it only when that returns: by then the runtime was left to it.
    A BaseException, so that ``except Exception`` does not swallow it.
    """

    def __init__(self, message: str = "the runtime was closed and the "
                                      "handler still ran"):
        super().__init__(message)


Interrupted.__module__ = "nbffi"        # as replies and tracebacks name it


def describe(exc: BaseException) -> Tuple[int, str]:
    """Returns the (status, text) an exception is answered with."""
    if isinstance(exc, Error):
        return exc.status, exc.message
    return STATUS_ERROR, format_exception(exc)


def format_exception(exc: BaseException) -> str:
    """``Type: message`` on the first line, so that a caller that shows one
    line shows the gist; then the traceback without the frames of nbffi
    and importlib, which only say how the handler was reached."""
    only = traceback.format_exception_only(type(exc), exc)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not _internal(f.filename)]
    text = only[-1]
    if frames:
        text += "Traceback (most recent call last):\n"
        text += "".join(traceback.format_list(frames))
    # a SyntaxError's file, line and caret
    text += "".join(only[:-1])
    return text.rstrip("\n")


def _internal(filename: str) -> bool:
    return filename.startswith(("<frozen importlib", _PACKAGE_DIR,
                                _IMPORTLIB_DIR))
