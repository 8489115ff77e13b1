"""The Kong and APISIX plugins of examples/gateways, unchanged, in plain
nginx with the real libnbffi and C echo runtime: their worker-init hook in
init_worker_by_lua, their access hook in access_by_lua, as each gateway
calls them (Kong: handler:init_worker(), handler:access(conf) with the
schema's defaults; APISIX: init(), access(conf, ctx), a returned status
ending the request).  Neither gateway can be installed here."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GW = REPO / "examples" / "gateways"

# The upstream's view: the header the plugin set.
SHOW = """
location / {
    %s
    content_by_lua_block {
        ngx.say(ngx.req.get_headers()["X-Nbffi-Reply"])
    }
}
"""

KONG_ACCESS = """access_by_lua_block {
        local handler = require "kong.plugins.nbffi-echo.handler"
        -- Kong fills conf from the schema's defaults
        local conf = {}
        local fields = require("kong.plugins.nbffi-echo.schema").fields
        for _, f in ipairs(fields[1].config.fields) do
            local name, spec = next(f)
            conf[name] = spec.default
        end
        handler:access(conf)
    }"""

APISIX_ACCESS = """access_by_lua_block {
        local plugin = require "apisix.plugins.nbffi-echo"
        local code = plugin.access({}, {})
        if code then
            return ngx.exit(code)
        end
    }"""

CASES = {
    "kong": (GW / "kong" / "?.lua",
             'require("kong.plugins.nbffi-echo.handler"):init_worker()',
             KONG_ACCESS),
    "apisix": (GW / "apisix" / "?.lua",
               'require("apisix.plugins.nbffi-echo").init()',
               APISIX_ACCESS),
}


@pytest.mark.parametrize("gateway", sorted(CASES))
def test_plugin_calls_the_runtime(gateway, nginx, echo_env, balanced):
    path, init_worker, access = CASES[gateway]
    ngx = nginx(lua_path=[path], init_worker=init_worker,
                server=SHOW % access,
                env={"NBFFI_RUNTIME": echo_env["NBFFI_ECHO_LIB"]})
    r = ngx.get("/some/path")
    assert (r.status, r.text) == (200, "/SOME/PATH\n"), ngx.error_log()[-2000:]
    balanced(ngx, workers=1)


@pytest.mark.parametrize("gateway", sorted(CASES))
def test_plugin_without_its_runtime(gateway, nginx):
    """A runtime that does not load: logged at init, 503 per request, the
    worker keeps serving."""
    path, init_worker, access = CASES[gateway]
    ngx = nginx(lua_path=[path], init_worker=init_worker,
                server=SHOW % access,
                env={"NBFFI_RUNTIME": "/nonexistent/libnope.so"})
    assert ngx.get("/x").status == 503
    assert ngx.get("/y").status == 503
    # logged once by resty.nbffi, not per request
    ngx.assert_log(r"\[error\].*nbffi: cannot load runtime library: "
                   r"/nonexistent/libnope\.so")
    assert ngx.error_log().count("libnope.so") == 1, ngx.error_log()
