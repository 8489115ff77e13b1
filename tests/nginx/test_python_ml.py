"""examples/python-ml in a real nginx: a scikit-learn model in the embedded
Python runtime answers POST /predict; checked on held-out data."""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "python-ml"
MIN_ACCURACY = 0.90     # logistic regression on digits scores about 0.97

SERVER = """
location = /predict {
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    content_by_lua_block { require("ml").predict() }
}
location = /stats {
    content_by_lua_block { require("ml").stats() }
}
"""


def need(path, what):
    if not path.exists():
        if os.environ.get("NBFFI_PYTHON_SUITE"):
            pytest.fail(f"{path} is missing ({what})")
        pytest.skip(f"{path} is missing ({what})")


@pytest.fixture(scope="module")
def venv():
    v = Path(os.environ.get("ML_VENV", EXAMPLE / ".venv"))
    need(v / "bin" / "python", "run examples/python-ml/setup-venv")
    return v


@pytest.fixture(scope="module")
def holdout(venv):
    """The quarter of the dataset the served model never saw."""
    out = subprocess.run([str(venv / "bin" / "python"),
                          str(EXAMPLE / "model.py"), "--holdout"],
                         capture_output=True, check=True).stdout
    data = json.loads(out)
    assert len(data["instances"]) == len(data["labels"]) > 400
    return data


@pytest.fixture
def ml_nginx(nginx, nbffi_build, venv):
    lib = nbffi_build / "shims" / "python" / "libnbffi_python.so"
    need(lib, "ninja -C build")

    def start(batch=True):
        env = {"NBFFI_PYTHON_LIB": str(lib), "ML_VENV": str(venv)}
        if not batch:
            env["ML_BATCH"] = "off"
        # numpy's OpenBLAS reads these; nginx keeps only what env lists
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if k in os.environ:
                env[k] = os.environ[k]
        return nginx(server=SERVER, init_worker='require("ml").init()',
                     env=env, lua_path=[EXAMPLE / "?.lua"])
    return start


def predict(ngx, rows):
    r = ngx.request("/predict", "POST",
                    body=json.dumps({"instances": rows}).encode())
    assert r.status == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return json.loads(r.body)


def predict_each(ngx, rows, concurrency=50):
    """One request per row, 50 at a time: calls batch across requests."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda row: predict(ngx, [row]), rows))


def check(replies, labels):
    """Accuracy of one-row replies; each is well formed."""
    right = 0
    for reply, label in zip(replies, labels):
        [pred], [proba] = reply["predictions"], reply["probabilities"]
        assert len(proba) == 10 and abs(sum(proba) - 1) < 1e-4
        assert proba.index(max(proba)) == pred
        right += pred == label
    return right / len(labels)


@pytest.mark.parametrize("batch", [True, False], ids=["batched",
                                                      "unbatched"])
def test_predictions_on_held_out_digits(ml_nginx, holdout, balanced, batch):
    ngx = ml_nginx(batch=batch)
    rows, labels = holdout["instances"], holdout["labels"]

    replies = predict_each(ngx, rows)
    accuracy = check(replies, labels)
    assert accuracy >= MIN_ACCURACY, accuracy

    # one request with every row: the same answers, row for row, so a
    # batch never mixes up whose rows are whose
    whole = predict(ngx, rows)
    assert whole["predictions"] == [r["predictions"][0] for r in replies]

    stats = json.loads(ngx.request("/stats").body)
    assert stats["calls"] == len(rows) + 1
    assert 1 <= stats["model_runs"] <= stats["calls"]
    if not batch:
        assert stats["model_runs"] == stats["calls"]
        assert stats["largest_batch"] == 1
    balanced(ngx, workers=1)


def test_bad_requests(ml_nginx, holdout):
    ngx = ml_nginx()
    for body, message in [
            (b"not json", 'bad request: want {"instances": [[64 numbers], '
                          '...]}: Expecting value'),
            (b'{"rows": []}', "bad request: want"),
            (b'{"instances": [[1, 2]]}', "bad request: instances must be a "
                                         "non-empty list of 64-number rows, "
                                         "got shape [1, 2]"),
            (b'{"instances": []}', "got shape [0]"),
            (b'{"instances": [["a"]]}', "could not convert string to "
                                        "float")]:
        r = ngx.request("/predict", "POST", body=body)
        assert r.status == 400, (body, r.text)
        assert r.text.startswith("runtime error 400: "), r.text
        assert message in r.text, r.text
    assert ngx.request("/predict").status == 400        # no body
    # and it keeps serving
    assert check([predict(ngx, [holdout["instances"][0]])],
                 holdout["labels"][:1]) in (0, 1)
