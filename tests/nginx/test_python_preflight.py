"""nbffi.preflight with the Python runtime: its check (nbffi._embed.check,
in the forked child) fails nginx's start on a cfg whose path, venv or
handler module is missing, without importing the handler; a good cfg
passes and the runtime serves."""

import json

import pytest

from harness import Nginx
from pyhelp import HANDLERS, RUNTIMES, py, py_lib, py_nginx  # noqa: F401


def preflight(cfg_json):
    return ('assert(require("resty.nbffi").preflight('
            f'os.getenv("NBFFI_PYTHON_LIB"), [==[{cfg_json}]==]))')


def test_a_good_cfg_passes(py_nginx, balanced):
    ngx = py_nginx(init=preflight(RUNTIMES["T_PY_ECHO"]))
    assert py(ngx, "echo", b"hi").text == "hi"
    balanced(ngx, workers=1)


BAD = [
    ({"handler": "no_such_module", "path": [str(HANDLERS)]},
     "python: cannot load handler 'no_such_module': ModuleNotFoundError:"
     " No module named 'no_such_module'"),
    ({"handler": "t_echo", "path": [str(HANDLERS)], "venv": "/nope/venv"},
     "python cfg: handler 't_echo': \"venv\": /nope/venv is not a"
     " virtualenv (no pyvenv.cfg)"),
    ({"handler": "t_echo", "path": ["/nope/handlers"]},
     "python cfg: handler 't_echo': \"path\": /nope/handlers is not a"
     " directory"),
    ({"handler": 42}, "python cfg: \"handler\" must be a non-empty string"),
]


@pytest.mark.parametrize("cfg, message", BAD,
                         ids=["module", "venv", "path", "cfg"])
def test_a_bad_cfg_fails_the_start(py_lib, tmp_path, cfg, message):
    ngx = Nginx(tmp_path / "bad", init=preflight(json.dumps(cfg)),
                env={"NBFFI_PYTHON_LIB": str(py_lib)})
    log = ngx.start_fails()
    assert "nbffi.preflight: runtime init failed: " + message in log, log
