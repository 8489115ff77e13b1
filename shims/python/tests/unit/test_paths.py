"""sys.path set-up from "path" and "venv"."""

import os
import sys

import pytest

from nbffi import _paths
from nbffi._config import ConfigError, parse


@pytest.fixture(autouse=True)
def own_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))


def apply(**cfg):
    import json
    _paths.apply(parse(json.dumps({"handler": "m", **cfg}).encode()))


def make_venv(root, version=None):
    version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return site


def test_path_goes_first_in_order_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sys.path.append(str(b))
    apply(path=[str(a), str(b)])
    assert sys.path[:2] == [str(a), str(b)]
    assert sys.path.count(str(b)) == 1


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    apply(path=["rel"])
    assert sys.path[0] == str(tmp_path / "rel")


def test_venv_site_packages_and_pth_after_path(tmp_path):
    site = make_venv(tmp_path / "venv")
    extra = tmp_path / "extra"
    extra.mkdir()
    (site / "extra.pth").write_text(str(extra) + "\n")
    apply(path=[str(tmp_path / "p")], venv=str(tmp_path / "venv"))
    assert sys.path[:3] == [str(tmp_path / "p"), str(site), str(extra)]


def test_not_a_venv(tmp_path):
    with pytest.raises(ConfigError, match="is not a virtualenv"):
        apply(venv=str(tmp_path))


def test_venv_of_another_python(tmp_path):
    make_venv(tmp_path, "3.99")
    with pytest.raises(ConfigError) as e:
        apply(venv=str(tmp_path))
    assert "has no lib/python%d.%d/site-packages (it has python3.99)" % \
        sys.version_info[:2] in str(e.value)
    assert sys.version.split()[0] in str(e.value)
    assert os.fspath(tmp_path) in str(e.value)
