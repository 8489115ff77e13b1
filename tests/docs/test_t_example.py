"""t/echo.t's blocks, run the way Test::Nginx::Socket runs them (a
server with --- config inside --- http_config, --- main_config at the top,
$TEST_NGINX_* from the environment, each request repeat_each times, the
status 200, --- response_body exactly, --- no_error_log absent), in the
project's harness: Test::Nginx itself is not packaged for Debian 12."""

import re

import pytest

from docblocks import REPO, DocNginx, running

T = REPO / "t" / "echo.t"
SECTION = re.compile(r"^--- (\w+)\n(.*?)(?=^--- |\Z)", re.S | re.M)


def t_tests():
    data = T.read_text().split("__DATA__", 1)[1]
    out = []
    for chunk in re.split(r"^=== ", data, flags=re.M)[1:]:
        title, body = chunk.split("\n", 1)
        out.append((title.strip(), {k: v.rstrip("\n") + "\n"
                                    for k, v in SECTION.findall(body)}))
    return out


def repeat_each():
    return int(re.search(r"repeat_each\((\d+)\)", T.read_text()).group(1))


def conf(blocks):
    text = (f"include /etc/nginx/modules-enabled/*.conf;\n"
            f"{blocks.get('main_config', '')}events {{}}\nhttp {{\n"
            f"{blocks.get('http_config', '')}server {{\n"
            f"listen 127.0.0.1:8080;\n{blocks['config']}}}\n}}\n")
    # what Test::Nginx does with $TEST_NGINX_* (TEST_NGINX_NBFFI: the clone)
    return text.replace("$TEST_NGINX_NBFFI", str(REPO))


def test_the_file_has_blocks():
    assert len(t_tests()) >= 2 and repeat_each() >= 1


@pytest.mark.parametrize("title,blocks", t_tests(), ids=[t for t, _ in t_tests()])
def test_block(title, blocks, tmp_path, nbffi_build):
    method, path = blocks["request"].split()[:2]
    with running(DocNginx(tmp_path / "t", conf(blocks))) as ngx:
        for _ in range(repeat_each()):
            r = ngx.request(path, method=method)
            assert r.status == 200, (title, ngx.error_log()[-2000:])
            assert r.text == blocks["response_body"], title
    log = ngx.error_log()
    for pattern in blocks.get("no_error_log", "").split("\n"):
        if pattern:
            assert pattern not in log, (title, pattern)
