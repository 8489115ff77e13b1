"""A handwritten-digit classifier served from nginx through nbffi.

The model (standard scaling + logistic regression) is trained when the
runtime starts, on the digits dataset that ships inside scikit-learn
(1797 8x8 images; no download), leaving out a fixed, stratified quarter
that it never sees.  ``python model.py --holdout`` prints that quarter as
JSON, so that anyone can measure the served model on data it did not learn.

Requests (POST /predict):   {"instances": [[64 pixel values 0..16], ...]}
Replies:                    {"predictions": [digit, ...],
                             "probabilities": [[p0, ..., p9], ...]}

Calls to ``predict`` are micro-batched: ``predict_batch`` gets the payloads
of every call queued meanwhile (up to 64) and runs the model once on all
their rows, which costs about as much as running it on one row.

``predict_stream`` is a generator: called with ``rt:stream`` it sends one
JSON line per slice of ``STREAM_ROWS`` rows as soon as that slice is
computed (a large batch reaches the client while the rest is computed),
and stops if the client goes away.  ``reload`` retrains the model on a
thread of its own and, when the new model is in place, emits the event
``model-reloaded`` (``{"version": N, "trained_on": rows}``): no call is
waiting for it, the Lua handlers of the event get it.
"""

import json
import logging
import sys
import threading

import numpy as np

try:
    import nbffi
except ImportError:         # --holdout runs outside nbffi
    nbffi = None

FEATURES = 64
SEED = 0
STREAM_ROWS = 16        # rows per line of predict_stream

log = logging.getLogger("python-ml")


def split():
    """(X_train, X_test, y_train, y_test), the same on every run."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=SEED,
                            stratify=y)


def _batch(fn):
    return nbffi.batch(max_size=64, max_wait_ms=0)(fn) if nbffi else fn


def train():
    """A fresh model fitted on the training split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, _, y_train, _ = split()
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(max_iter=2000))
    model.fit(X_train, y_train)
    return model, len(y_train)


class Classifier:
    def __init__(self):
        self.model, rows = train()
        self.classes = self.model.classes_.tolist()
        self.version = 1
        self.reloading = None
        self.calls = 0
        self.runs = 0
        self.largest = 0
        log.info("trained on %d digits", rows)

    def predict(self, payload):
        """Unbatched: one model run per call (the cfg can select it)."""
        rows = parse(payload)
        self._count(1)
        return self._reply(self.model.predict_proba(rows))

    @_batch
    def predict_batch(self, payloads):
        parsed = []
        for payload in payloads:
            try:
                parsed.append(parse(payload))
            except nbffi.Error as exc:
                parsed.append(exc)      # fails that call alone
        good = [p for p in parsed if not isinstance(p, Exception)]
        if not good:
            return parsed
        self._count(len(good))
        proba = self.model.predict_proba(np.vstack(good))
        out, start = [], 0
        for p in parsed:
            if isinstance(p, Exception):
                out.append(p)
            else:
                out.append(self._reply(proba[start:start + len(p)]))
                start += len(p)
        return out

    def predict_stream(self, payload):
        """One JSON line per STREAM_ROWS rows, each sent when computed:
        {"from": first row, "predictions": [...], "probabilities": ...}."""
        rows = parse(payload)
        call = nbffi.current()
        log.info("streaming %d rows", len(rows))
        for start in range(0, len(rows), STREAM_ROWS):
            if call.cancelled:          # the caller gave up: stop early
                log.info("client gone at row %d", start)
                return
            self.runs += 1
            part = self.model.predict_proba(rows[start:start + STREAM_ROWS])
            line = json.loads(self._reply(part))
            line["from"] = start
            yield json.dumps(line) + "\n"

    def reload(self, payload):
        """Retrains on a thread; emits "model-reloaded" once it is used."""
        if self.reloading is not None and self.reloading.is_alive():
            return json.dumps({"reloading": True, "version": self.version})
        self.reloading = threading.Thread(target=self._reload,
                                          name="python-ml-reload")
        self.reloading.start()
        return json.dumps({"reloading": True, "version": self.version})

    def _reload(self):
        model, rows = train()
        self.model = model              # one assignment: calls see either
        self.version += 1
        log.info("model reloaded: version %d", self.version)
        nbffi.emit("model-reloaded", json.dumps({"version": self.version,
                                                 "trained_on": rows}))

    def close(self):
        if self.reloading is not None:
            self.reloading.join()

    def stats(self, payload):
        return json.dumps({"calls": self.calls, "model_runs": self.runs,
                           "largest_batch": self.largest,
                           "version": self.version})

    def _count(self, calls):
        self.calls += calls
        self.runs += 1
        self.largest = max(self.largest, calls)

    def _reply(self, proba):
        best = proba.argmax(axis=1)
        return json.dumps({
            "predictions": [self.classes[i] for i in best],
            "probabilities": np.round(proba, 6).tolist(),
        })


def parse(payload):
    """The rows of a request as a float matrix, or nbffi.Error (400)."""
    try:
        doc = json.loads(payload)
        rows = np.asarray(doc["instances"], dtype=np.float64)
    except (ValueError, TypeError, KeyError) as exc:
        raise nbffi.Error(f'bad request: want {{"instances": [[{FEATURES} '
                          f'numbers], ...]}}: {exc}', status=400) from None
    if rows.ndim != 2 or rows.shape[1] != FEATURES or len(rows) == 0:
        raise nbffi.Error(f"bad request: instances must be a non-empty list "
                          f"of {FEATURES}-number rows, got shape "
                          f"{list(rows.shape)}", status=400)
    return rows


if __name__ == "__main__":
    if sys.argv[1:] != ["--holdout"]:
        sys.exit("usage: model.py --holdout")
    _, X_test, _, y_test = split()
    json.dump({"instances": X_test.tolist(), "labels": y_test.tolist()},
              sys.stdout)
