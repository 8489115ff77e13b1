-- APISIX plugin nbffi-echo: init (each worker, once the plugin is loaded)
-- loads a runtime; access calls it and passes the reply upstream as a
-- header.  The runtime library is $NBFFI_RUNTIME (config.yaml:
-- nginx_config.envs: [NBFFI_RUNTIME]); libnbffi comes from the LuaRocks
-- tree of APISIX's OpenResty, or $NBFFI_LIB.
local nbffi = require "resty.nbffi"

local schema = {
    type = "object",
    properties = {
        method = { type = "string", default = "upper" },
        timeout = { type = "number", exclusiveMinimum = 0, default = 1 },
    },
}

local _M = { version = 0.2, priority = 900, name = "nbffi-echo",
             schema = schema }

local rt

function _M.check_schema(conf)
    return require("apisix.core").schema.check(schema, conf)
end

function _M.init()
    if ngx.get_phase() == "init" then
        return          -- the master: runtime threads would not survive fork
    end
    local ok, err = nbffi.init()
    if ok then
        rt, err = nbffi.load(os.getenv("NBFFI_RUNTIME") or "echo")
    end
    if not rt then
        ngx.log(ngx.ERR, "nbffi-echo: ", err)
    end
end

function _M.access(conf)
    -- a start that failed (in the background, after init) was logged
    -- once, with why, by resty.nbffi
    if not rt or rt:state() == "failed" then
        return 503
    end
    local reply, err = rt:call(conf.method or "upper", ngx.var.uri,
                               conf.timeout or 1)
    if not reply then
        ngx.log(ngx.ERR, "nbffi-echo: ", err)
        return 502
    end
    ngx.req.set_header("X-Nbffi-Reply", reply)
end

return _M
