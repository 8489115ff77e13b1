"""Helpers for writing Python handlers served by nbffi.

A handler is a module, a class (instantiated once per runtime) or an object
whose public methods take the call's payload as ``bytes`` and return the
reply as ``bytes`` (or ``str``, sent as UTF-8, or ``None`` for an empty
reply).  ``async def`` methods run on an asyncio loop owned by the runtime
thread; a method ``X_batch(list[bytes]) -> list[bytes]`` serves calls to
``X`` in micro-batches; a generator (plain or async) streams what it
yields.  ``current()`` gives the call being served (metadata, deadline,
whether the caller gave up); ``emit(name, data)`` sends an event to the
host.  See the README next to this package for the cfg format and the
rules.
"""

from ._call import Call, current
from ._errors import STATUS_ERROR, STATUS_NO_METHOD, Error, Interrupted
from ._handler import batch
from ._log import emit

__all__ = ["Call", "Error", "Interrupted", "STATUS_ERROR", "STATUS_NO_METHOD",
           "batch", "current", "emit"]
__version__ = "0.2.0"
