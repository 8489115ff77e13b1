-- The Lua side of bench/go/stream: streams through nbffi (rt:stream) and
-- through the sidecar (a cosocket, frames), and events emitted by Go.
local ffi = require "ffi"
local nbffi = require "resty.nbffi"

local ngx = ngx
local tonumber = tonumber

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } gostream_timespec;
int clock_gettime(int clk, gostream_timespec *ts);
]]
local ts = ffi.new("gostream_timespec")

-- CLOCK_MONOTONIC in seconds, to the nanosecond (ngx.now has ms).
local function now()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local _M = {}

local rt, sock_path
local events = { seen = 0, want = -1, sema = nil }

local function on_event()
    events.seen = events.seen + 1
    if events.seen == events.want then
        events.sema:post(1)
    end
end

-- init_worker: lib is the Go library, sock the sidecar's stream socket.
function _M.init(lib, sock)
    assert(nbffi.init())
    rt = assert(nbffi.load(lib, "", { timeout = 60 }))
    sock_path = sock
    nbffi.on_event("ev", on_event)
end

local function via_nbffi(total, chunk, window)
    local start = now()
    local first, bytes = nil, 0
    for data, err in rt:stream("stream", total .. " " .. chunk,
                               { timeout = 60, window = window }) do
        if not data then
            return nil, err
        end
        first = first or now()
        bytes = bytes + #data
    end
    return bytes, first - start
end

local function via_sidecar(sock, total, chunk)
    local start = now()
    local req = total .. " " .. chunk
    local ok, err = sock:send({ string.char(0, 0, 0, #req), req })
    if not ok then
        return nil, err
    end
    local first, bytes = nil, 0
    while true do
        local hdr
        hdr, err = sock:receive(4)
        if not hdr then
            return nil, err
        end
        local b1, b2, b3, b4 = hdr:byte(1, 4)
        local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
        if n == 0 then
            break
        end
        local data
        data, err = sock:receive(n)
        if not data then
            return nil, err
        end
        first = first or now()
        bytes = bytes + n
    end
    return bytes, first - start
end

-- GET /stream?via=nbffi|sidecar&n=N&total=T&chunk=C[&window=W]: N streams
-- of T bytes in chunks of C (nbffi: W in flight), one after the other:
-- "bytes seconds mean_first_s".
function _M.stream()
    local a = ngx.req.get_uri_args()
    local n, total, chunk = tonumber(a.n), tonumber(a.total), tonumber(a.chunk)
    local sock
    if a.via == "sidecar" then
        sock = ngx.socket.tcp()
        assert(sock:connect("unix:" .. sock_path))
    end
    local start, bytes, first = now(), 0, 0
    for _ = 1, n do
        local b, f
        if sock then
            b, f = via_sidecar(sock, total, chunk)
        else
            b, f = via_nbffi(total, chunk, tonumber(a.window))
        end
        if not b then
            return ngx.say("error: ", f)
        end
        bytes, first = bytes + b, first + f
    end
    if sock then
        sock:setkeepalive()
    end
    ngx.say(bytes, " ", now() - start, " ", first / n)
end

-- GET /events?n=N&size=S: Go emits N events of S bytes; answers once this
-- worker's handler saw them all: "events seconds retries".
function _M.events()
    local a = ngx.req.get_uri_args()
    local n = tonumber(a.n)
    events.seen, events.want = 0, n
    events.sema = require("ngx.semaphore").new()
    local start = now()
    local retries, err = rt:call("emit", n .. " " .. a.size, 120)
    if not retries then
        return ngx.say("error: ", err)
    end
    local ok
    ok, err = events.sema:wait(120)
    if not ok then
        return ngx.say("error: ", err, " after ", events.seen, " events")
    end
    ngx.say(events.seen, " ", now() - start, " ", retries)
end

return _M
