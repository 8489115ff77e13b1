-- Locations of the reliability tests, for any runtime language: the fault
-- runtime is $NBFFI_FAULT_LIB loaded with $NBFFI_FAULT_CFG and the options
-- in $NBFFI_FAULT_OPTS ("name=number,..."), once per worker.
local nbffi = require "resty.nbffi"

local ngx = ngx
local concat = table.concat
local pairs = pairs
local sort = table.sort
local tonumber = tonumber
local tostring = tostring

local _M = {}

local opts = {}
for k, v in (os.getenv("NBFFI_FAULT_OPTS") or ""):gmatch("([%w_]+)=([%d.]+)") do
    opts[k] = tonumber(v)
end

local payloads = {}             -- size -> string of that many bytes


-- wall clock in ms, not nginx's cached time
local function now_ms()
    ngx.update_time()
    return ngx.now() * 1000
end


local function fail(status, msg)
    ngx.log(ngx.WARN, "fault_rt: ", msg)
    ngx.status = status
    ngx.say(msg)
    return ngx.exit(status)
end


-- The fault runtime of this worker (nil, err when its load failed).
function _M.rt(cfg)
    return nbffi.load(os.getenv("NBFFI_FAULT_LIB"),
                      cfg or os.getenv("NBFFI_FAULT_CFG"), opts)
end


-- init_worker: load the runtime now, as an application would.
function _M.init_worker()
    assert(nbffi.init())
    assert(_M.rt())
end


local function payload(args)
    local n = tonumber(args.n)
    if not n then
        return args.p or ""
    end
    local p = payloads[n]
    if not p then
        p = ("0123456789abcdef"):rep(math.ceil(n / 16)):sub(1, n)
        payloads[n] = p
    end
    return p
end


-- One call and its outcome: "ok:<reply>" or "err:<err> status=<status>",
-- newlines and tabs as "\n" and "\t" (one outcome per line).
local function outcome(rt, method, p, timeout)
    local reply, err, status = rt:call(method, p, timeout)
    local o
    if reply then
        o = "ok:" .. reply
    else
        o = "err:" .. err .. " status=" .. tostring(status)
    end
    return (o:gsub("\n", "\\n"):gsub("\t", "\\t"))
end


-- /call?m=METHOD&p=PAYLOAD|n=SIZE&t=TIMEOUT: 200 and the reply, or 502
-- and the error (header X-Status: the runtime's status).
function _M.call()
    local rt, err = _M.rt()
    if not rt then
        return fail(500, "load: " .. err)
    end
    local args = ngx.req.get_uri_args()
    local reply, status
    reply, err, status = rt:call(args.m, payload(args), tonumber(args.t))
    if not reply then
        ngx.header["X-Status"] = tostring(status)
        return fail(502, err)
    end
    ngx.print(reply)
end


-- /soak?n=SIZE: echoes SIZE bytes, checks the reply; "ok", or 500.
function _M.soak()
    local rt, err = _M.rt()
    if not rt then
        return fail(500, "load: " .. err)
    end
    local p = payload(ngx.req.get_uri_args())
    local reply
    reply, err = rt:call("echo", p, 10)
    if reply ~= p then
        return fail(500, reply and "reply differs" or err)
    end
    ngx.print("ok")
end


-- /calls?m=METHOD&c=COUNT&p=..|n=..&t=..: COUNT concurrent calls from light
-- threads of this request; one line per distinct outcome, "count<TAB>
-- outcome", sorted, then "max_ms<TAB>outcome<TAB>ms" for each outcome.
function _M.calls()
    local rt, err = _M.rt()
    if not rt then
        return fail(500, "load: " .. err)
    end
    local args = ngx.req.get_uri_args()
    local p = payload(args)
    local timeout = tonumber(args.t)
    local threads = {}
    for i = 1, tonumber(args.c) do
        threads[i] = ngx.thread.spawn(function()
            local t0 = now_ms()
            local o = outcome(rt, args.m, p, timeout)
            return o, now_ms() - t0
        end)
    end
    local counts, slowest = {}, {}
    for i = 1, #threads do
        local ok, o, ms = ngx.thread.wait(threads[i])
        if not ok then
            o, ms = "thread failed: " .. tostring(o), 0
        end
        counts[o] = (counts[o] or 0) + 1
        if ms > (slowest[o] or -1) then
            slowest[o] = ms
        end
    end
    local lines = {}
    for o, n in pairs(counts) do
        lines[#lines + 1] = n .. "\t" .. o
        lines[#lines + 1] = "max_ms\t" .. o .. "\t"
                            .. string.format("%.3f", slowest[o])
    end
    sort(lines)
    ngx.say(concat(lines, "\n"))
end


-- /load?cfg=CFG: loads another runtime of the same library; "ok" or the
-- error, and how long the load took.
function _M.load()
    local t0 = now_ms()
    local rt, err = _M.rt(ngx.req.get_uri_args().cfg)
    local ms = now_ms() - t0
    ngx.header["X-Ms"] = string.format("%.1f", ms)
    if not rt then
        return fail(502, err)
    end
    ngx.print("ok")
end


-- /stats: this worker's counters and the fault runtime's, "name=value"
-- lines.
function _M.stats()
    local h = nbffi.host_stats() or {}
    local rt = _M.rt()
    local s = rt and rt:stats() or {}
    local lines = { "pid=" .. ngx.worker.pid() }
    for k, v in pairs(h) do
        lines[#lines + 1] = k .. "=" .. tostring(v)
    end
    for k, v in pairs(s) do
        lines[#lines + 1] = "rt_" .. k .. "=" .. tostring(v)
    end
    sort(lines)
    ngx.say(concat(lines, "\n"))
end


-- /close: closes this worker's fault runtime.
function _M.close()
    local rt = _M.rt()
    ngx.say(rt and rt:close() and "closed" or "no runtime")
end

return _M
