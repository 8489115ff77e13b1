"""cfg parsing: accepted forms and the errors of malformed ones."""

import logging

import pytest

from nbffi._config import BatchOptions, ConfigError, parse


def test_bare_handler_spec():
    c = parse(b"  pkg.mod:Outer.Inner \n")
    assert c.handler == "pkg.mod:Outer.Inner"
    assert c.path == () and c.venv is None and not c.has_options
    assert c.log_level == logging.INFO and c.close_timeout == 30.0


def test_full_json():
    c = parse(b'{"handler": "m:C", "path": ["/a", "b"], "venv": "/v",'
              b' "options": {"k": [1]}, "log_level": "debug",'
              b' "batch": {"p": {"max_size": 8, "max_wait_ms": 2.5},'
              b'           "q": false},'
              b' "close_timeout": 0}')
    assert c.path == ("/a", "b") and c.venv == "/v"
    assert c.has_options and c.options == {"k": [1]}
    assert c.log_level == logging.DEBUG and c.close_timeout == 0.0
    assert c.batch == {"p": BatchOptions(8, 0.0025), "q": None}


def test_options_null_is_still_given():
    c = parse(b'{"handler": "m:C", "options": null}')
    assert c.has_options and c.options is None


def test_path_may_be_one_string():
    assert parse(b'{"handler": "m", "path": "/x"}').path == ("/x",)


@pytest.mark.parametrize("cfg, message", [
    (b"", "cfg is empty"),
    (b"   ", "cfg is empty"),
    (b"\xff", "cfg is not UTF-8"),
    (b"{", "cfg is not valid JSON"),
    (b'{"path": []}', 'cfg lacks "handler"'),
    (b'{"handler": "m", "paths": []}', "unknown cfg key(s) paths"),
    (b'{"handler": ""}', '"handler" must be a non-empty string'),
    (b'{"handler": 3}', '"handler" must be a non-empty string'),
    (b"mod:", '"handler" must be "module" or "module:attr"'),
    (b":attr", '"handler" must be "module" or "module:attr"'),
    (b'{"handler": "m", "path": [1]}', '"path" must be a list'),
    (b'{"handler": "m", "venv": ""}', '"venv" must be a non-empty string'),
    (b'{"handler": "m", "batch": []}', '"batch" must map'),
    (b'{"handler": "m", "batch": {"p": true}}', '"batch"."p" must be false'),
    (b'{"handler": "m", "batch": {"p": {"size": 1}}}',
     '"batch"."p" must be false'),
    (b'{"handler": "m", "batch": {"p": {"max_size": 0}}}',
     "max_size must be an int >= 1"),
    (b'{"handler": "m", "batch": {"p": {"max_size": true}}}',
     "max_size must be an int >= 1"),
    (b'{"handler": "m", "batch": {"p": {"max_wait_ms": -1}}}',
     "max_wait_ms must be a number >= 0"),
    (b'{"handler": "m", "log_level": "LOUD"}', '"log_level" must be one of'),
    (b'{"handler": "m", "log_level": 10}', '"log_level" must be one of'),
    (b'{"handler": "m", "close_timeout": "1"}', '"close_timeout" must be'),
    (b'{"handler": "m", "close_timeout": -1}', '"close_timeout" must be'),
])
def test_malformed(cfg, message):
    with pytest.raises(ConfigError) as e:
        parse(cfg)
    assert message in str(e.value)
