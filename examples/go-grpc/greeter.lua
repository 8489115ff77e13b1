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

-- init_worker_by_lua*: starts nbffi and one runtime of lib, with one gRPC
-- connection to target ("host:port").
function _M.init(lib, target)
    assert(nbffi.init())
    rt, load_err = nbffi.load(lib, cjson.encode({ target = target }),
                              { timeout = 5, name = "greeter" })
    if not rt then
        ngx.log(ngx.ERR, "greeter: ", load_err)
    end
end

local function reply_json(status, body)
    ngx.status = status
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode(body))
end

-- content_by_lua*: calls method with the query's name, delay_ms and
-- count; timeout (seconds) bounds the call.
function _M.call(method)
    if not rt then
        return reply_json(ngx.HTTP_INTERNAL_SERVER_ERROR,
                          { error = "runtime not loaded: " .. (load_err
                                    or "greeter.init() was not called") })
    end

    local args = ngx.req.get_uri_args()
    local req = cjson.encode({
        name = args.name,
        delayMs = tonumber(args.delay_ms),
        count = tonumber(args.count),
    })

    local reply, err, status = rt:call(method, req, tonumber(args.timeout))
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

return _M
