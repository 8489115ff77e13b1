"""Client: the harness's Load, run until stopped rather than for a fixed
time, for tests whose length depends on nginx (a storm of reloads)."""

import threading
import time

from harness import Load

SLICE = 0.1     # s: Load runs in slices, checking for stop between them


class Client(Load):
    def __init__(self, ngx, path, concurrency, check):
        super().__init__(ngx, path, 0, concurrency, check)
        self._stop = threading.Event()

    def start(self):
        self._threads = [threading.Thread(target=self._slices)
                         for _ in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        """Stops the client; returns (ok_count, failures) like join()."""
        self._stop.set()
        return self.join()

    def _slices(self):
        while not self._stop.is_set():
            self._run(time.monotonic() + SLICE)
