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

-- The query's upstream path, or nil once it answered 503 (no runtime).
local function upstream_path()
    if not rt then
        ngx.status = 503
        ngx.say("runtime not loaded: ", load_err)
        return nil
    end
    return ngx.unescape_uri(ngx.var.arg_path or "/")
end

function _M.fetch()
    local path = upstream_path()
    if not path then
        return
    end
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

-- GET /lines?path=P: the upstream body, relayed line by line as the
-- handler reads it (chunked transfer, one flush per line).  The request
-- id goes with the call: the handler's log lines carry it.
function _M.lines()
    local path = upstream_path()
    if not path then
        return
    end
    local it, st = rt:stream("lines", path, {
        meta = {request_id = ngx.var.request_id},
    })
    local sent = false
    for line, err in it, st do
        if not line then
            if not sent then
                -- nothing went out yet: the status can still say it
                local status = tonumber(err:match("^runtime error (%d+)"))
                ngx.status = (status and status >= 400 and status < 600)
                             and status or 502
            end
            ngx.say(err)
            return
        end
        local ok, ferr = ngx.print(line)
        if ok then
            ok, ferr = ngx.flush(true)
        end
        if not ok then
            -- the client went away: the handler's sink sees the cancel
            ngx.log(ngx.INFO, "java-pool: client gone: ", ferr)
            st:close()
            return
        end
        sent = true
    end
end

return _M
