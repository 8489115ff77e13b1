-- nbbench: the Lua side of the nginx benchmarks (bench/run, bench/go/run,
-- bench/python/run).  A "via" is one way to run a handler for a request:
--
--   { lib = PATH, cfg = STR, method = NAME, opts = TABLE }  an nbffi runtime
--   { socket = PATH }        a unix-socket sidecar: 4-byte big-endian
--                            length-prefixed frames on a cosocket kept open
--   { pool = NAME, module = NAME, func = NAME }  ngx.run_worker_thread
--   { inline = "md5" }       ngx.md5 on the event loop (blocks it)
--
-- plus job = "echo" (default: the reply is the payload) or "md5" (the reply
-- is ngx.md5 of the payload), which /seq and /many check.  configure()
-- runs in init_by_lua with every via; init_worker() loads the runtimes.

local ffi = require "ffi"
local nbffi = require "resty.nbffi"

local ngx = ngx
local bit = require "bit"
local band = bit.band
local rshift = bit.rshift
local str_char = string.char
local str_rep = string.rep
local tonumber = tonumber

local _M = {}

-- A monotonic clock in seconds: ngx.now() has millisecond resolution.
ffi.cdef[[
typedef struct { long sec; long nsec; } nbbench_timespec_t;
int clock_gettime(int clk, nbbench_timespec_t *tp);
]]
local ts = ffi.new("nbbench_timespec_t")

local function now()
    ffi.C.clock_gettime(1, ts)          -- CLOCK_MONOTONIC
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local PAYLOAD = str_rep("p", 512)      -- /one and /plain
local vias = {}                         -- name -> via
local runtimes = {}                     -- name -> nbffi runtime, per worker


local function noop()
end


local function frame_header(n)
    return str_char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                    band(rshift(n, 8), 255), band(n, 255))
end


local function sidecar_call(sock, payload)
    local ok, err = sock:send({ frame_header(#payload), payload })
    if not ok then
        return nil, err
    end
    local h
    h, err = sock:receive(4)
    if not h then
        return nil, err
    end
    local a, b, c, d = h:byte(1, 4)
    return sock:receive(((a * 256 + b) * 256 + c) * 256 + d)
end


-- init_by_lua: every via of the run, by name.
function _M.configure(all)
    vias = all
end


-- init_worker_by_lua: the dispatcher, and every nbffi runtime loaded.
function _M.init_worker()
    assert(nbffi.init())
    for name, via in pairs(vias) do
        if via.lib then
            runtimes[name] = assert(nbffi.load(via.lib, via.cfg or "",
                                               via.opts))
        end
    end
end


-- call(payload) -> reply | nil, err, and done() for the end of the use.
function _M.caller(name)
    local via = vias[name]
    if via == nil then
        error("no via named " .. tostring(name))
    end

    if via.lib then
        local rt, method = runtimes[name], via.method
        return function(p) return rt:call(method, p) end, noop
    end

    if via.socket then
        local sock = ngx.socket.tcp()
        assert(sock:connect("unix:" .. via.socket))
        return function(p) return sidecar_call(sock, p) end,
               function() sock:setkeepalive(60000, 512) end
    end

    if via.pool then
        local run = ngx.run_worker_thread   -- luacheck: ignore (0.10.21+)
        local pool, module, func = via.pool, via.module, via.func
        return function(p)
            local ok, res = run(pool, module, func, p)
            if not ok then
                return nil, res
            end
            return res
        end, noop
    end

    return ngx.md5, noop                -- inline = "md5"
end


local function expected(name, payload)
    return vias[name].job == "md5" and ngx.md5(payload) or payload
end


-- /seq?via=&n=&size=: n sequential calls; says "<correct replies> <s>".
function _M.seq()
    local name = ngx.var.arg_via
    local call, done = _M.caller(name)
    local n = tonumber(ngx.var.arg_n)
    local payload = str_rep("x", tonumber(ngx.var.arg_size))
    local want = expected(name, payload)
    local ok = 0
    local t0 = now()
    for _ = 1, n do
        if call(payload) == want then
            ok = ok + 1
        end
    end
    local t = now() - t0
    done()
    ngx.say(ok, " ", t)
end


-- /many?via=&n=&size=&threads=: n calls from that many light threads;
-- says the number of correct replies.
function _M.many()
    local name = ngx.var.arg_via
    local n = tonumber(ngx.var.arg_n)
    local threads = tonumber(ngx.var.arg_threads)
    local payload = str_rep("x", tonumber(ngx.var.arg_size))
    local want = expected(name, payload)

    local function worker(count)
        local call, done = _M.caller(name)
        local ok = 0
        for _ = 1, count do
            if call(payload) == want then
                ok = ok + 1
            end
        end
        done()
        return ok
    end

    local spawned = {}
    for i = 1, threads do
        local count = math.floor(n / threads) + (i <= n % threads and 1 or 0)
        spawned[i] = ngx.thread.spawn(worker, count)
    end
    local total = 0
    for i = 1, threads do
        local _, ok = ngx.thread.wait(spawned[i])
        total = total + ok
    end
    ngx.say(total)
end


-- /one?via=: one call with a 512-byte payload; says the reply.
function _M.one()
    local call, done = _M.caller(ngx.var.arg_via)
    local reply, err = call(PAYLOAD)
    done()
    if not reply then
        ngx.status = 502
        ngx.say(err)
        return
    end
    ngx.say(reply)
end


-- /plain: says the same 512 bytes as an echo via, without any call.
function _M.plain()
    ngx.say(PAYLOAD)
end


return _M
