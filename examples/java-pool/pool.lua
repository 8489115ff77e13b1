-- The Lua side of the example: loads the Java runtime in init_worker and
-- serves GET /fetch?path=P through its "fetch" method.
local nbffi = require "resty.nbffi"

local _M = {}
local rt, load_err

-- init_worker: lib is libnbffi_java.so, cfg the runtime's cfg text.  The
-- JVM starts on a thread of libnbffi; calls that come before it is ready
-- wait for it, and if it fails they return its error.
function _M.init(lib, cfg)
    assert(nbffi.init())
    rt, load_err = nbffi.load(lib, cfg, { name = "java-pool" })
    if not rt then
        ngx.log(ngx.ERR, "java-pool: ", load_err)
    end
end

function _M.fetch()
    if not rt then
        ngx.status = 503
        ngx.say("runtime not loaded: ", load_err)
        return
    end
    local path = ngx.unescape_uri(ngx.var.arg_path or "/")
    local body, err, status = rt:call("fetch", path)
    if not body then
        -- the handler's error status is the upstream's HTTP status
        ngx.status = (status and status >= 400 and status < 600) and status
                     or 502
        ngx.say(err)
        return
    end
    ngx.print(body)
end

return _M
