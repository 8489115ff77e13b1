-- Test helper: the Java runtime of the integration tests.  $NBFFI_JAVA_LIB
-- is libnbffi_java.so, $NBFFI_JAVA_CFG the base cfg; nbffi.load returns the
-- worker's runtime for the same (lib, cfg) once it is loaded.
local nbffi = require "resty.nbffi"

local _M = {}

function _M.rt(extra, opts)
    return nbffi.load(os.getenv("NBFFI_JAVA_LIB"),
                      os.getenv("NBFFI_JAVA_CFG") .. (extra or ""), opts)
end

-- init_worker: start the dispatcher and the JVM, before the first request.
function _M.init_worker(extra)
    assert(nbffi.init())
    local rt, err = _M.rt(extra)
    if not rt then
        ngx.log(ngx.ERR, "java_rt: ", err)
    end
end

-- content: calls ?m= with the request body (or ?p=); replies with the
-- reply, or 500 and the error.
function _M.call(extra)
    local rt, err = _M.rt(extra)
    if not rt then
        ngx.status = 500
        ngx.print("load: ", err)
        return
    end
    ngx.req.read_body()
    local payload = ngx.req.get_body_data() or ngx.var.arg_p or ""
    local reply, status
    reply, err, status = rt:call(ngx.var.arg_m, payload,
                                 tonumber(ngx.var.arg_t))
    if not reply then
        ngx.status = 500
        ngx.header["X-Status"] = status
        ngx.print(err)
        return
    end
    ngx.print(reply)
end

return _M
