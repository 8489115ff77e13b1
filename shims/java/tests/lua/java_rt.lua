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

-- The call's options from the query: ?t= timeout, ?w= window, ?rid=
-- the metadata's request_id.
function _M.opts()
    local opts = {timeout = tonumber(ngx.var.arg_t),
                  window = tonumber(ngx.var.arg_w)}
    if ngx.var.arg_rid then
        opts.meta = {request_id = ngx.var.arg_rid}
    end
    return opts
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
    reply, err, status = rt:call(ngx.var.arg_m, payload, _M.opts())
    if not reply then
        ngx.status = 500
        ngx.header["X-Status"] = status
        ngx.print(err)
        return
    end
    ngx.print(reply)
end

-- content: streams ?m= with ?p= (options as _M.opts), one line per
-- chunk, flushed; "ERR <err>" on failure; with ?sleep=S it reads one
-- chunk every S seconds (a slow reader) and ends with the most chunks it
-- saw waiting ("max_pending N window W").  A failed flush (the client
-- went away) leaves the loop, which gives the stream up.
function _M.stream()
    local rt, err = _M.rt()
    if not rt then
        ngx.status = 500
        ngx.print("load: ", err)
        return
    end
    local pause = tonumber(ngx.var.arg_sleep)
    local payload = ngx.unescape_uri(ngx.var.arg_p or "")
    local it, st = rt:stream(ngx.var.arg_m, payload, _M.opts())
    local max_pending, window = 0, 0
    for chunk, serr in it, st do
        if not chunk then
            ngx.say("ERR ", serr)
            break
        end
        local ok, ferr = ngx.say(chunk)
        if ok then
            ok, ferr = ngx.flush(true)
        end
        if not ok then
            ngx.log(ngx.INFO, "java_rt.stream: client gone: ", ferr)
            st:close()
            return
        end
        if pause then
            ngx.sleep(pause)
            local n, w = st:pending()
            if n > max_pending then
                max_pending, window = n, w
            end
        end
    end
    if pause then
        ngx.say("max_pending ", max_pending, " window ", window)
    end
end


-- init_worker: the Java runtime as init_worker(), and a handler of every
-- event that logs it and counts it in lua_shared_dict "events".
function _M.init_events()
    _M.init_worker()
    nbffi.on_event("*", function(data, name)
        ngx.log(ngx.NOTICE, "java event ", name, ": ", data)
        local dict = ngx.shared.events
        if dict then
            dict:incr(name, 1, 0)
            dict:set(name .. ":last", data)
        end
    end)
end


-- content: the event counters of this worker, as "key value" lines.
function _M.event_stats()
    local st = nbffi.event_stats()
    for _, k in ipairs({"emitted", "delivered", "dropped", "handled"}) do
        ngx.say(k, " ", st[k])
    end
end

return _M
