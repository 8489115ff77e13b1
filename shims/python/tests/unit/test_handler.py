"""Which methods a handler exposes, and how its target is made."""

import importlib

import pytest

from nbffi._config import BatchOptions, ConfigError, parse
from nbffi._handler import BatchMethod, Method, methods, resolve


def load(module, source, handler="", extra=""):
    name, where = module(source)
    cfg = (f'{{"handler": "{name}{handler}", "path": ["{where}"]{extra}}}')
    from nbffi import _paths
    config = parse(cfg.encode())
    _paths.apply(config)
    target = resolve(config)
    return target, methods(target, config.batch)


def test_module_exposes_its_own_public_functions(module):
    _, table = load(module, """
        import json
        from os.path import join
        from nbffi import batch

        def echo(p): return p
        async def later(p): return p
        def _private(p): return p
        def close(): pass
        class Thing: pass
        CONSTANT = 3
    """)
    assert sorted(table) == ["echo", "later"]
    assert table["echo"] == Method(table["echo"].fn, False)
    assert table["later"].is_async


def test_class_is_instantiated_once_with_options(module):
    target, table = load(module, """
        class H:
            made = 0
            def __init__(self, options):
                H.made += 1
                self.options = options
            def get(self, p): return repr(self.options)
            def _hidden(self, p): return p
            def close(self): pass
            nested = dict
    """, ":H", ', "options": {"a": 1}')
    assert type(target).made == 1 and target.options == {"a": 1}
    assert sorted(table) == ["get"]


def test_object_attribute_and_dotted_path(module):
    target, table = load(module, """
        class Outer:
            class Inner:
                def ping(self, p): return b"pong"
        instance = Outer.Inner()
    """, ":instance")
    assert sorted(table) == ["ping"]
    _, table = load(module, """
        class Outer:
            class Inner:
                def ping(self, p): return b"pong"
    """, ":Outer.Inner")
    assert sorted(table) == ["ping"]


def test_options_need_a_class(module):
    with pytest.raises(ConfigError, match="is not a class"):
        load(module, "def f(p): return p\n", "", ', "options": 1')


def test_batch_methods(module):
    _, table = load(module, """
        import nbffi
        class H:
            def plain_batch(self, ps): return ps
            @nbffi.batch(max_size=3, max_wait_ms=7)
            def tuned_batch(self, ps): return ps
            async def slow_batch(self, ps): return ps
            def both(self, p): return p
            def both_batch(self, ps): return ps
    """, ":H")
    assert sorted(table) == ["both", "plain", "slow", "tuned"]
    assert table["plain"].opts == BatchOptions()
    assert table["tuned"].opts == BatchOptions(3, 0.007)
    assert isinstance(table["slow"], BatchMethod) and table["slow"].is_async
    # with X and X_batch, X_batch wins unless the cfg turns it off
    assert isinstance(table["both"], BatchMethod)


def test_cfg_batch_overrides_and_disables(module):
    src = """
        import nbffi
        class H:
            def both(self, p): return p
            @nbffi.batch(max_size=3)
            def both_batch(self, ps): return ps
            def only_batch(self, ps): return ps
    """
    _, table = load(module, src, ":H", ', "batch": {"both": false}')
    assert isinstance(table["both"], Method)
    _, table = load(module, src, ":H",
                    ', "batch": {"both": {"max_size": 9}}')
    assert table["both"].opts == BatchOptions(9, 0.0)
    with pytest.raises(ConfigError, match="has no 'only' method"):
        load(module, src, ":H", ', "batch": {"only": false}')
    with pytest.raises(ConfigError, match="has no nope_batch method"):
        load(module, src, ":H", ', "batch": {"nope": {}}')


def test_no_methods(module):
    with pytest.raises(ConfigError, match="has no public methods"):
        load(module, "X = 1\n")


def test_batch_decorator_checks_options():
    nbffi = importlib.import_module("nbffi")
    with pytest.raises(ValueError, match="max_size"):
        nbffi.batch(max_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        nbffi.batch(max_wait_ms="1")


def test_a_changed_module_is_imported_again(module, tmp_path):
    name, where = module("def hello(p): return b'v1'\n")
    first, table = load(lambda _: (name, where), None)
    assert table["hello"].fn(b"") == b"v1"
    # unchanged: the same module, not run again
    again, _ = load(lambda _: (name, where), None)
    assert again is first
    # the same size, within the same second: the .pyc must not win
    (tmp_path / f"{name}.py").write_text("def hello(p): return b'v2'\n")
    _, table = load(lambda _: (name, where), None)
    assert table["hello"].fn(b"") == b"v2"
