"""Unit tests of the nbffi package, in-process through nbffi.testing.

The package is imported from this source tree, ahead of any installed copy.
`module` writes a handler module under a unique name into tmp_path.
"""

import itertools
import sys
import textwrap
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(SHIM))

_names = itertools.count()


@pytest.fixture
def module(tmp_path):
    """module(source) -> (name, directory) of a fresh handler module."""
    def write(source):
        name = f"t_unit_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name, str(tmp_path)
    return write
