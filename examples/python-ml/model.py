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
"""

import json
import logging
import sys

import numpy as np

try:
    import nbffi
except ImportError:         # --holdout runs outside nbffi
    nbffi = None

FEATURES = 64
SEED = 0

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


class Classifier:
    def __init__(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X_train, _, y_train, _ = split()
        self.model = make_pipeline(StandardScaler(),
                                   LogisticRegression(max_iter=2000))
        self.model.fit(X_train, y_train)
        self.classes = self.model.classes_.tolist()
        self.calls = 0
        self.runs = 0
        self.largest = 0
        log.info("trained on %d digits", len(y_train))

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

    def stats(self, payload):
        return json.dumps({"calls": self.calls, "model_runs": self.runs,
                           "largest_batch": self.largest})

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
