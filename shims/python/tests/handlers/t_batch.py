"""Batched handler class for the loader tests."""

import nbffi


class Squares:
    def __init__(self, options=None):
        self.sizes = []

    @nbffi.batch(max_size=4, max_wait_ms=60000)
    def square_batch(self, payloads):
        self.sizes.append(len(payloads))
        return [ValueError("not a number: " + p.decode())
                if not p.isdigit() else str(int(p) ** 2) for p in payloads]

    def sizes_seen(self, payload):
        return ",".join(map(str, self.sizes))
