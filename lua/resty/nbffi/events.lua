-- resty.nbffi.events: events that runtimes emit (a name and bytes, no
-- call), delivered to the handlers this worker registered for the name.
--
-- libnbffi keeps the events in the host's bounded queue.  The dispatcher
-- calls kick() on each wake-up; when events wait and no runner runs, kick
-- starts one: an ngx.timer that takes the events one by one, in order,
-- and calls each handler of the name under pcall.  Handlers run in that
-- timer, so they may yield: call runtimes, use cosockets, sleep.  Events
-- are never held in Lua beyond the one being handled: while handlers are
-- slow, the C queue fills and drops, counted in nbffi.event_stats() and
-- logged once per burst.

local ffi = require "ffi"
local core = require "resty.nbffi.core"

local ngx = ngx
local timer_at = ngx.timer.at
local ERR = ngx.ERR
local WARN = ngx.WARN

local C = core.C
local now_ns = core.now_ns
local ffi_new = ffi.new
local ffi_string = ffi.string
local error = error
local pcall = pcall
local tonumber = tonumber
local type = type


local DROP_LOG_EVERY = 1e9      -- ns between two lines about drops


local _M = {}

local host                      -- nbffi_host_t *, set by the dispatcher
local handlers = {}             -- name -> { fn, ... }
local running = false           -- a runner timer is on
local logged_dropped = 0        -- drops counted in the last line
local next_drop_log = 0
local handled = 0
local handler_errors = 0

local ev_out = ffi_new("nbffi_event_t *[1]")
local len_out = ffi_new("size_t[1]")
local stats_out = ffi_new("nbffi_event_stats_t")


function _M.attach(h)
    host = h
    running = false
end


-- Logs the drops since the last line, at most once a second: a flood
-- gives one line per second, not one per event.
local function log_drops(log, dropped, now)
    if dropped > logged_dropped and now >= next_drop_log then
        log(WARN, "nbffi: ", dropped - logged_dropped, " events dropped"
            .. " (the event queue holds ", tonumber(stats_out.max_events),
            " events or ", tonumber(stats_out.max_bytes), " bytes; ",
            dropped, " dropped in all)")
        logged_dropped = dropped
        next_drop_log = now + DROP_LOG_EVERY
    end
end


local function run_one(log)
    local name = ffi_string(C.nbffi_event_name(ev_out[0], len_out),
                            len_out[0])
    local p = C.nbffi_event_data(ev_out[0], len_out)
    local data = ffi_string(p, len_out[0])
    local list = handlers[name] or handlers["*"]
    if not list then
        return
    end
    for i = 1, #list do
        local ok, err = pcall(list[i], data, name)
        handled = handled + 1
        if not ok then
            handler_errors = handler_errors + 1
            log(ERR, "nbffi: handler of event '", name, "': ", err)
        end
    end
end


local function runner(premature, log)
    -- at worker exit (premature) the events still waiting are handled
    -- too: nothing else would take them
    local _ = premature
    local h = host
    while h and h == host do
        if C.nbffi_host_event_next(h, ev_out) ~= 1 then
            break
        end
        run_one(log)
    end
    running = false
    if h and h == host then
        C.nbffi_host_event_stats(h, stats_out)
        log_drops(log, tonumber(stats_out.dropped), now_ns())
        -- an event that came after the last look
        if tonumber(stats_out.queued) > 0 then
            _M.kick(log)
        end
    end
end


-- Called by the dispatcher on each wake-up (and the tick): starts a
-- runner when events wait, logs drops.
function _M.kick(log)
    local h = host
    if not h or running then
        return
    end
    C.nbffi_host_event_stats(h, stats_out)
    log_drops(log, tonumber(stats_out.dropped), now_ns())
    if tonumber(stats_out.queued) == 0 then
        return
    end
    local ok, err = timer_at(0, runner, log)
    if not ok then
        log(ERR, "nbffi: cannot start the event runner: ", err)
        return
    end
    running = true
end


function _M.on(name, fn)
    if type(name) ~= "string" or name == "" then
        error("bad argument #1 to 'on_event' (non-empty string expected,"
              .. " got " .. type(name) .. ")", 3)
    end
    if type(fn) ~= "function" then
        error("bad argument #2 to 'on_event' (function expected, got "
              .. type(fn) .. ")", 3)
    end
    local list = handlers[name]
    if not list then
        list = {}
        handlers[name] = list
    end
    list[#list + 1] = fn
    return true
end


function _M.off(name, fn)
    if type(name) ~= "string" then
        error("bad argument #1 to 'off_event' (string expected, got "
              .. type(name) .. ")", 3)
    end
    local list = handlers[name]
    if not list then
        return false
    end
    if fn == nil then
        handlers[name] = nil
        return true
    end
    for i = #list, 1, -1 do
        if list[i] == fn then
            table.remove(list, i)
            if #list == 0 then
                handlers[name] = nil
            end
            return true
        end
    end
    return false
end


-- The host's event counters and this worker's handler counts.
function _M.stats()
    local h = host
    if not h then
        return nil, "no runtime loaded yet"
    end
    C.nbffi_host_event_stats(h, stats_out)
    local s = stats_out
    return {
        emitted = tonumber(s.emitted),
        delivered = tonumber(s.delivered),
        dropped = tonumber(s.dropped),
        queued = tonumber(s.queued),
        queued_bytes = tonumber(s.queued_bytes),
        max_events = tonumber(s.max_events),
        max_bytes = tonumber(s.max_bytes),
        handled = handled,
        handler_errors = handler_errors,
    }
end


function _M.set_limit(max_events, max_bytes)
    local h = host
    if not h then
        return nil, "no runtime loaded yet"
    end
    C.nbffi_host_set_event_limit(h, max_events or 0, max_bytes or 0)
    return true
end


return _M
