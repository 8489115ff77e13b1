"""The fixtures of tests/nginx/conftest.py (nginx, echo_nginx, balanced,
nbffi_build, ...) for the docs' tests."""

import importlib.util
import sys
from pathlib import Path

NGINX_TESTS = Path(__file__).resolve().parents[1] / "nginx"
sys.path.insert(0, str(NGINX_TESTS))

_spec = importlib.util.spec_from_file_location(
    "nginx_conftest", NGINX_TESTS / "conftest.py")
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)

nginx = _fx.nginx
echo_nginx = _fx.echo_nginx
echo_env = _fx.echo_env
balanced = _fx.balanced
nbffi_build = _fx.nbffi_build
