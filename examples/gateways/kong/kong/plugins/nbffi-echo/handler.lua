-- Kong plugin nbffi-echo: each worker loads a runtime at init_worker; the
-- access phase calls it and passes the reply upstream as a header.
-- The runtime library is $NBFFI_RUNTIME (kong.conf: nginx_main_env =
-- NBFFI_RUNTIME); libnbffi comes from Kong's LuaRocks tree.
local nbffi = require "resty.nbffi"

local Plugin = { PRIORITY = 900, VERSION = "0.2.0" }

local rt     -- this worker's runtime

-- Kong calls handler:init_worker() and handler:access(conf): the first
-- argument is the handler table itself.
function Plugin.init_worker(_)
    local ok, err = nbffi.init()
    if ok then
        rt, err = nbffi.load(os.getenv("NBFFI_RUNTIME") or "echo")
    end
    if not rt then
        ngx.log(ngx.ERR, "nbffi-echo: ", err)
    end
end

function Plugin.access(_, conf)
    -- a start that failed (in the background, after init_worker) was
    -- logged once, with why, by resty.nbffi
    if not rt or rt:state() == "failed" then
        return ngx.exit(503)
    end
    local reply, err = rt:call(conf.method, ngx.var.uri, conf.timeout)
    if not reply then
        ngx.log(ngx.ERR, "nbffi-echo: ", err)
        return ngx.exit(502)
    end
    ngx.req.set_header("X-Nbffi-Reply", reply)
end

return Plugin
