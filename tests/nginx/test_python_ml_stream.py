"""examples/python-ml's stream and event in a real nginx: the held-out
digits streamed back as JSON lines, one per 16 rows, relayed chunk by
chunk; a model reload announced by the runtime's "model-reloaded" event,
which updates a lua_shared_dict."""

import http.client
import json
import os

import pytest

from test_python_ml import EXAMPLE, holdout, need, venv  # noqa: F401

SERVER = """
location = /predict {
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    content_by_lua_block { require("ml").predict() }
}
location = /predict/stream {
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    content_by_lua_block { require("ml").predict_stream() }
}
location = /reload { content_by_lua_block { require("ml").reload() } }
location = /model { content_by_lua_block { require("ml").model() } }
location = /stats { content_by_lua_block { require("ml").stats() } }
"""


@pytest.fixture
def ml(nginx, nbffi_build, venv):  # noqa: F811
    lib = nbffi_build / "shims" / "python" / "libnbffi_python.so"
    need(lib, "ninja -C build")
    env = {"NBFFI_PYTHON_LIB": str(lib), "ML_VENV": str(venv)}
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            env[k] = os.environ[k]
    return nginx(server=SERVER, http="lua_shared_dict ml 1m;",
                 init_worker='require("ml").init()', env=env,
                 lua_path=[EXAMPLE / "?.lua"])


def test_predictions_stream_as_json_lines(ml, holdout):  # noqa: F811
    rows = holdout["instances"]
    body = json.dumps({"instances": rows}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", ml.port, timeout=60)
    conn.request("POST", "/predict/stream", body=body)
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/x-ndjson"
    assert r.getheader("Transfer-Encoding") == "chunked"
    lines = []
    while True:
        line = r.readline()
        if not line:
            break
        lines.append(json.loads(line))
    conn.close()
    assert len(lines) == (len(rows) + 15) // 16
    assert [ln["from"] for ln in lines] == list(range(0, len(rows), 16))
    streamed = [p for ln in lines for p in ln["predictions"]]
    whole = json.loads(ml.request("/predict", "POST", body=body).body)
    assert streamed == whole["predictions"]
    right = sum(p == y for p, y in zip(streamed, holdout["labels"]))
    assert right / len(rows) >= 0.90
    # the runtime's line about this request carries its request id
    ml.wait_log(rf"python-ml: streaming {len(rows)} rows, request_id: "
                r"[0-9a-f]{32}")


def test_a_bad_stream_request_is_a_400(ml):
    r = ml.request("/predict/stream", "POST", body=b'{"instances": [[1]]}')
    assert r.status == 400 and "bad request" in r.text


def test_a_reload_is_announced_by_an_event(ml):
    assert json.loads(ml.request("/model").body) == {"model_version": 1}
    r = ml.request("/reload", "POST", body=b"")
    assert r.status == 200
    assert json.loads(r.body)["reloading"] is True
    # /model?wait=2 waits on a semaphore the event handler posts
    assert json.loads(ml.request("/model?wait=2").body) == \
        {"model_version": 2}
    ml.wait_log(r"python-ml: model reloaded, version 2")
    assert json.loads(ml.request("/stats").body)["version"] == 2
