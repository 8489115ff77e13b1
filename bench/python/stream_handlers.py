"""The handlers of bench/python/stream: through nbffi, chunks yields
"N SIZE" chunks (a plain generator, served on the runtime's thread) and
events emits "N SIZE" events; stream_sidecar.py sends the same chunks."""

try:
    import nbffi
except ImportError:         # the sidecar's process
    nbffi = None


def make_chunks(payload):
    n, size = map(int, payload.split())
    return n, b"c" * size


def chunks(payload):
    n, chunk = make_chunks(payload)
    for _ in range(n):
        yield chunk


def events(payload):
    n, size = map(int, payload.split())
    data = b"e" * size
    emit = nbffi.emit
    queued = 0
    for _ in range(n):
        queued += emit("bench", data)
    return str(queued)
