-- Work that stalls an nginx worker, for tests/stall.  The tests find the
-- lines they expect in reports by the "@name" markers below.

local ffi = require "ffi"
local cjson = require "cjson.safe"
local stall = require "resty.nbffi.stall"

local ngx = ngx
local os_clock = os.clock

ffi.cdef[[
int usleep(unsigned int usec);
]]

local _M = {}


-- The loop on one line: the interpreter counts its FORL instruction on
-- the line of the "for", the body on its own.
local function burn(n)
    local s = 0
    for i = 1, n do s = (s + i * 7) % 1000003 end       -- @burn
    return s
end


-- ms of CPU in a loop: most samples fall on the @burn line.
function _M.spin(ms)
    local stop = os_clock() + ms / 1000
    local s = 0
    while os_clock() < stop do
        s = s + burn(100000)                            -- @spin
    end
    return s
end


-- A blocking system call from Lua (the FFI).
function _M.nap(ms)
    ffi.C.usleep(ms * 1000)                             -- @nap
end


-- Another: a shell, waited for with waitpid().
function _M.shell(seconds)
    os.execute("sleep " .. seconds)                     -- @shell
end


-- Another: a read from a pipe nobody writes to yet (a slow file).
function _M.slurp(path)
    local f = assert(io.open(path, "r"))
    local data = f:read("*a")                           -- @slurp
    f:close()
    return data
end


function _M.timer_job(premature, ms)                    -- @timer_job
    if premature then
        return
    end
    _M.spin(ms)
end


-- Handlers: the worker's pid first, so that tests know who served.
function _M.run(kind)
    local args = ngx.req.get_uri_args()
    local ms = tonumber(args.ms) or 300
    if kind == "spin" then
        _M.spin(ms)
    elseif kind == "nap" then
        _M.nap(ms)
    elseif kind == "shell" then
        _M.shell(ms / 1000)
    elseif kind == "slurp" then
        _M.slurp(args.path)
    elseif kind == "timer" then
        assert(ngx.timer.at(0, _M.timer_job, ms))
    elseif kind == "on" then
        assert(stall.start{ threshold = tonumber(args.threshold) or 0.05 })
    elseif kind == "off" then
        assert(stall.stop())
    end
    ngx.say(ngx.worker.pid())
end


-- The status a location can serve: this worker's stalls as JSON.
function _M.status()
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode({
        pid = ngx.worker.pid(),
        stats = stall.stats(),
        stalls = stall.recent(),
    }))
end

return _M
