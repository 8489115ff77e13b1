-- The nginx side of the Go gRPC example: HTTP request in, a Greeter call
-- through nbffi and the Go library libgogrpc.so, JSON out.
local nbffi = require "resty.nbffi"
local cjson = require "cjson.safe"

local ngx = ngx
local tonumber = tonumber

-- Replies of the Go library with status 100 + c carry gRPC code c.
local STATUS_GRPC = 100

-- HTTP status for a gRPC code.
local HTTP = {
    [3] = ngx.HTTP_BAD_REQUEST,            -- InvalidArgument
    [4] = ngx.HTTP_GATEWAY_TIMEOUT,        -- DeadlineExceeded
    [5] = ngx.HTTP_NOT_FOUND,              -- NotFound
    [14] = ngx.HTTP_SERVICE_UNAVAILABLE,   -- Unavailable
}

local _M = {}

local rt, load_err

-- The watch's events: each "greeting" (the message's JSON) is kept in the
-- lua_shared_dict "greetings": the last one, and their count.  Handlers
-- run in a timer of their own, where they could also yield.
local function on_greeting(data)
    local dict = ngx.shared.greetings
    dict:set("last", data)
    dict:incr("count", 1, 0)
end

-- init_worker_by_lua*: starts nbffi and one runtime of lib, with one gRPC
-- connection to target ("host:port").  With watch ({name = "w",
-- delayMs = 100}), the runtime watches the server's stream of greetings
-- for that name and emits each one as an event "greeting", which this
-- worker stores in the lua_shared_dict "greetings" (declare it).
function _M.init(lib, target, watch)
    assert(nbffi.init())
    if watch then
        nbffi.on_event("greeting", on_greeting)
    end
    rt, load_err = nbffi.load(lib, cjson.encode({ target = target,
                                                  watch = watch }),
                              { timeout = 5, name = "greeter" })
    if not rt then
        ngx.log(ngx.ERR, "greeter: ", load_err)
    end
end

-- The runtime (nil before init or after a failed load), for locations of
-- their own.
function _M.runtime()
    return rt
end

-- The call's metadata: the request id, which the Go library forwards to
-- the gRPC server and which its log lines carry.
local function meta()
    return { request_id = ngx.var.request_id }
end

local function reply_json(status, body)
    ngx.status = status
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode(body))
end

-- The gRPC request of the query's name, delay_ms and count, and the
-- query's arguments; or nil once it answered 500 (no runtime).
local function request()
    if not rt then
        return reply_json(ngx.HTTP_INTERNAL_SERVER_ERROR,
                          { error = "runtime not loaded: " .. (load_err
                                    or "greeter.init() was not called") })
    end

    local args = ngx.req.get_uri_args()
    return cjson.encode({
        name = args.name,
        delayMs = tonumber(args.delay_ms),
        count = tonumber(args.count),
    }), args
end

-- content_by_lua*: calls method with the query's name, delay_ms and
-- count; timeout (seconds) bounds the call.
function _M.call(method)
    local req, args = request()
    if not req then
        return
    end

    local reply, err, status = rt:call(method, req, {
        timeout = tonumber(args.timeout), meta = meta() })
    if reply then
        ngx.header.content_type = "application/json"
        return ngx.say(reply)
    end

    if status and status > STATUS_GRPC then
        local code = status - STATUS_GRPC
        return reply_json(HTTP[code] or ngx.HTTP_BAD_GATEWAY,
                          { error = err, grpc_code = code })
    end
    reply_json(err == "timeout" and ngx.HTTP_GATEWAY_TIMEOUT
               or ngx.HTTP_INTERNAL_SERVER_ERROR, { error = err })
end

-- content_by_lua*: the server-streaming SayHellos relayed as it comes,
-- one JSON line per gRPC message, each flushed to the client at once
-- (chunked transfer encoding).  An error after the first line can only
-- end the body: it is logged and sent as a last line {"error": ...}.
function _M.stream()
    local req, args = request()
    if not req then
        return
    end

    ngx.header.content_type = "application/x-ndjson"
    local iter, st = rt:stream("SayHellos", req, {
        timeout = tonumber(args.timeout), meta = meta() })
    for chunk, err in iter, st do
        if not chunk then
            ngx.log(ngx.WARN, "greeter: stream: ", err)
            ngx.print(cjson.encode({ error = err }), "\n")
            break
        end
        ngx.print(chunk)
        local ok, ferr = ngx.flush(true)
        if not ok then
            -- the client went away: cancel the stream now (leaving the
            -- loop alone would leave that to the garbage collector)
            ngx.log(ngx.INFO, "greeter: stream: ", ferr)
            st:close()
            break
        end
    end
end

-- content_by_lua*: what the watch brought so far, as JSON.
function _M.watched()
    local dict = ngx.shared.greetings
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode({ count = dict:get("count") or 0,
                           last = cjson.decode(dict:get("last") or "null") }))
end

return _M
