-- resty.nbffi.dispatcher: this worker's host and the delivery of its
-- completions.
--
-- One dispatcher per worker (a light thread in a timer) watches the
-- host's notifier socket as a cosocket, reaps completions in batches,
-- stores each result in its waiter record and posts the record's
-- semaphore.  A tick timer wakes it once a second (sweep, runtime logs)
-- and restarts it if it stopped.  While no dispatcher runs (before it
-- started, after it left, or when the notifier cannot be made) waiting
-- callers reap by themselves, every POLL seconds at first, less often the
-- longer they wait (up to POLL_MAX).
--
-- Nothing one call does can stop the others: the dispatcher's loop body
-- runs protected, and a reply that cannot be delivered (too large for a
-- Lua string, or any error on its way) fails its own call only.

local ffi = require "ffi"
local core = require "resty.nbffi.core"
local waiters = require "resty.nbffi.waiters"
local events = require "resty.nbffi.events"
local meta_text = require("resty.nbffi.meta").text
local errlog = require "ngx.errlog"
local get_sys_filter_level = errlog.get_sys_filter_level
local raw_log = errlog.raw_log

local ngx = ngx
local ngx_log = ngx.log
local ngx_sleep = ngx.sleep
local ngx_tcp = ngx.socket.tcp
local get_phase = ngx.get_phase
local timer_at = ngx.timer.at
local timer_every = ngx.timer.every
local worker_exiting = ngx.worker.exiting
local ALERT = ngx.ALERT
local ERR = ngx.ERR
local WARN = ngx.WARN
local NOTICE = ngx.NOTICE
local INFO = ngx.INFO
local DEBUG = ngx.DEBUG

local C = core.C
local now_ns = core.now_ns
local strerror = core.strerror
local ffi_new = ffi.new
local ffi_string = ffi.string
local bor = require("bit").bor
local math_min = math.min
local pcall = pcall
local tonumber = tonumber
local tostring = tostring


local REAP_BATCH = 64
local TICK = 1                  -- s between dispatcher wake-ups
local READ_TIMEOUT = 10000      -- ms; a backstop only: the tick wakes sooner
local POLL = 0.001              -- s between reaps when no dispatcher runs
local POLL_MAX = 0.016          -- ... at most, once a call waited a while
local MAX_WAIT = 86400          -- s in one sema:wait (it takes int ms)
local LOG_BUF = 4096
-- LuaJIT's longest string (LJ_MAX_STR): a longer reply cannot be returned.
local MAX_STRING = 0x7fffff00
-- Replies from this size on are copied under pcall: their allocation may
-- fail.  Smaller ones are copied directly, on the JIT-compiled path.
local BIG_REPLY = 1048576

local LEVELS = {
    [3] = ERR, [4] = WARN, [5] = NOTICE, [6] = INFO, [7] = DEBUG,
}


local _M = {}

local host                      -- nbffi_host_t *, nil before first use
local log = ngx_log             -- swapped for the final shutdown's
local dispatching = false       -- the dispatcher is connected and reading
local dispatcher_started = false
local notifier_broken           -- why the notifier cannot be made, for good
local on_exit_start             -- called once when the worker starts exiting
local errors = 0                -- errors caught on the dispatcher's path

-- the batch being delivered: an error while delivering task i leaves the
-- rest of the batch to the next round, never lost
local batch_n = 0
local batch_i = 0
local current                   -- the task being delivered, and its record
local current_rec
local vm_closing = false        -- the final shutdown: semaphores may be gone
-- Payloads lent to tasks of orphaned runtimes: kept for the life of the
-- worker, since a thread of such a runtime may still read them.
local pinned = {}

local reap_out = ffi_new("nbffi_task_t *[?]", REAP_BATCH)
local streams_out = ffi_new("nbffi_task_t *[?]", REAP_BATCH)
local len_out = ffi_new("size_t[1]")
local level_out = ffi_new("int[1]")
local dropped_out = ffi_new("uint64_t[1]")
local log_buf = ffi_new("char[?]", LOG_BUF)
local path_buf = ffi_new("char[?]", 512)
local host_out = ffi_new("nbffi_host_t *[1]")


-- Stores the result of a completed task in its record and wakes its
-- waiters.  Raises only on an error of its own, with current set.
local function deliver(task)
    current = task
    current_rec = nil

    local id = tonumber(C.nbffi_task_id(task))
    local rec = waiters.take(id)
    if not rec then
        -- every task this module does not release has a record
        current = nil
        C.nbffi_task_release(task)
        log(ALERT, "nbffi: reaped task ", id, " has no waiter")
        return
    end

    current_rec = rec
    if not rec.gone then
        local p = C.nbffi_task_reply(task, len_out)
        local len = tonumber(len_out[0])
        rec.status = C.nbffi_task_status(task)
        if len < BIG_REPLY then
            rec.reply = ffi_string(p, len)
        elseif len > MAX_STRING then
            rec.err = "reply too large for a Lua string: " .. len
                      .. " bytes (the most is " .. MAX_STRING .. ")"
        else
            local ok, reply = pcall(ffi_string, p, len)
            if ok then
                rec.reply = reply
            else
                rec.err = "cannot copy a reply of " .. len .. " bytes: "
                          .. tostring(reply)
            end
        end
        rec.done = true
    end
    if rec.payload and C.nbffi_task_leaked(task) ~= 0 then
        -- a thread of an orphaned runtime may still read the lent payload
        pinned[#pinned + 1] = rec.payload
    end
    current = nil
    if rec.stream and not rec.gone then
        -- its reader reads the chunks left, then releases it; until then
        -- the record stays, for the sweep to find a reader that is gone
        waiters.add(id, rec)
    else
        C.nbffi_task_release(task)
    end

    local sema = rec.sema
    if sema and not vm_closing then
        if rec.stream and sema:count() < 0 then
            rec.posted = true   -- see reap_streams
        end
        sema:post(rec.nwait or 1)
    end
    local on_done = rec.on_done
    if on_done then
        local ok, err = pcall(on_done, rec)
        if not ok then
            errors = errors + 1
            log(ERR, "nbffi: ", err)
        end
    end
end


-- An error while delivering current: release it, fail its waiter.
local function deliver_failed(err)
    local task, rec = current, current_rec
    current = nil
    if not task then
        return
    end
    C.nbffi_task_release(task)
    if not rec or rec.gone then
        return
    end
    rec.err = "cannot deliver the reply: " .. tostring(err)
    rec.done = true
    local sema = rec.sema
    if sema and not vm_closing then
        sema:post(rec.nwait or 1)
    end
end


local function reap_batches()
    local h = host
    while true do
        if batch_i >= batch_n then
            batch_n = C.nbffi_host_reap(h, reap_out, REAP_BATCH)
            batch_i = 0
            if batch_n <= 0 then
                batch_n = 0
                return
            end
        end
        while batch_i < batch_n do
            local i = batch_i
            batch_i = i + 1     -- first: a task that raises is not retried
            deliver(reap_out[i])
        end
    end
end


-- Drains every completion.  An error fails the one call it came from.
local function reap_all()
    if current then
        -- an error escaped from reap() below
        deliver_failed("interrupted by an error")
    end
    while true do
        local ok, err = pcall(reap_batches)
        if ok then
            return
        end
        errors = errors + 1
        deliver_failed(err)
        log(ERR, "nbffi: error while delivering a reply: ", err)
    end
end


-- reap_all, unprotected, for the JIT-compiled paths (a trace cannot return
-- into pcall): a caller whose spin found its reply, and the dispatcher's
-- loop, which runs under one pcall.  Delivery raises on nothing but a
-- broken VM or an injected fault; should it, the error goes up with
-- current set, and whoever catches it calls deliver_failed.
local function reap()
    if current then
        return reap_all()
    end
    return reap_batches()
end
_M.reap = reap
_M.reap_all = reap_all


-- Wakes the readers of streams that got chunks.
local function reap_streams()
    local h = host
    while true do
        local n = C.nbffi_host_reap_streams(h, streams_out, REAP_BATCH)
        if n <= 0 then
            return
        end
        for i = 0, n - 1 do
            local rec = waiters.get(tonumber(C.nbffi_task_id(streams_out[i])))
            local sema = rec and rec.sema
            if sema and not vm_closing then
                -- only a reader that waits now will resume: a killed one
                -- left the count at 0, and must look abandoned
                if sema:count() < 0 then
                    rec.posted = true
                end
                sema:post(rec.nwait or 1)
            end
        end
        if n < REAP_BATCH then
            return
        end
    end
end
_M.reap_streams = reap_streams


-- Writes the runtimes' queued log lines to the error log.
local function drain_logs()
    local h = host
    while true do
        local n = C.nbffi_host_log_next(h, level_out, log_buf, LOG_BUF,
                                        dropped_out)
        local dropped = tonumber(dropped_out[0])
        if dropped > 0 then
            log(WARN, "nbffi: ", dropped, " runtime log lines dropped")
        end
        if n <= 0 then
            return
        end
        local level = LEVELS[level_out[0]] or NOTICE
        local msg = ffi_string(log_buf, math_min(n, LOG_BUF - 1))
        local m = C.nbffi_host_log_meta(h, len_out)
        if m ~= nil then
            msg = msg .. meta_text(ffi_string(m, len_out[0]))
        end
        if log == ngx_log then
            -- no "[lua] file:line:" prefix, no context of whatever request
            -- happens to drain the line
            raw_log(level, "nbffi runtime: " .. msg)
        else
            log(level, "nbffi runtime: ", msg)
        end
    end
end
_M.drain_logs = drain_logs


-- What the tick does when no dispatcher runs.
local function serve()
    reap_all()
    reap_streams()
    events.kick(log)
    drain_logs()
    waiters.sweep(now_ns())
end


local start_dispatcher


local function connect_notifier()
    local rc = C.nbffi_host_listen(host, path_buf, 512)
    if rc < 0 then
        local msg = ffi_string(path_buf)
        if rc == core.EINVAL then
            return nil, "nbffi_host_listen: " .. strerror(rc)
        end
        -- TMPDIR unusable or too long: it will not get better by retrying
        notifier_broken = msg
        return nil, msg
    end

    local sock = ngx_tcp()
    local ok, err = sock:connect("unix:" .. ffi_string(path_buf))
    if not ok then
        return nil, "connect to the notifier: " .. err
    end

    rc = C.nbffi_host_accept(host)
    if rc < 0 then
        sock:close()
        return nil, "nbffi_host_accept: " .. strerror(rc)
    end

    local refused = tonumber(C.nbffi_host_peers_refused(host))
    if refused > 0 then
        log(WARN, "nbffi: the notifier refused ", refused, " connection(s)"
            .. " from other processes of this user")
    end

    sock:settimeouts(1000, 1000, READ_TIMEOUT)
    return sock
end


-- The dispatcher's loop.  It runs under one pcall (in dispatch), not one
-- per wake-up, so that its work is JIT-compiled.
local function run(sock)
    dispatching = true
    while true do
        local data, err = sock:receiveany(64)
        if not data and err ~= "timeout" then
            error("notifier read failed: " .. tostring(err), 0)
        end
        reap()
        reap_streams()
        events.kick(log)
        drain_logs()
        waiters.sweep(now_ns())
        if worker_exiting() then
            return
        end
    end
end


local function dispatch(premature)
    if premature or worker_exiting() then
        dispatcher_started = false
        return
    end

    local sock, err = connect_notifier()
    if not sock then
        dispatcher_started = false
        if notifier_broken then
            log(ERR, "nbffi: no dispatcher in this worker: ", err,
                "; callers reap by themselves (every ", POLL * 1000, " to ",
                POLL_MAX * 1000, " ms)")
        else
            log(ERR, "nbffi: dispatcher: ", err,
                "; callers reap by themselves until it restarts")
        end
        return
    end

    local ok
    ok, err = pcall(run, sock)

    -- every way out: the state is reset, waiting callers reap by themselves
    dispatching = false
    dispatcher_started = false
    sock:close()

    if not ok then
        errors = errors + 1
        if current then
            -- one reply could not be delivered: fail that call only, and
            -- carry on with the rest of its batch at once
            deliver_failed(err)
            log(ERR, "nbffi: error while delivering a reply: ", err)
            start_dispatcher()
        else
            -- the tick restarts it within a second
            log(ERR, "nbffi: dispatcher: ", err, "; callers reap by"
                .. " themselves until it restarts")
        end
    end

    waiters.wake_all()
end


-- Once a second: wakes the dispatcher (sweep, runtime logs), or does its
-- work when none runs.  At worker exit the timer fires early and the kick
-- wakes the dispatcher at once, so that an old worker leaves promptly.
local function tick(premature)
    local h = host
    if not h then
        return
    end
    if premature and on_exit_start then
        local fn = on_exit_start
        on_exit_start = nil
        fn()
    end
    if dispatching then
        C.nbffi_host_kick(h)
        return
    end
    if premature then
        return
    end
    local ok, err = pcall(serve)
    if not ok then
        errors = errors + 1
        log(ERR, "nbffi: tick: ", err)
    end
    if not dispatcher_started and not notifier_broken then
        start_dispatcher()
    end
end


start_dispatcher = function()
    local ok, err = timer_at(0, dispatch)
    if not ok then
        log(ERR, "nbffi: cannot start the dispatcher: ", err)
        return
    end
    dispatcher_started = true
end


-- This worker's host, made on first use; nil and an error in the master.
-- on_exit runs when the worker starts exiting, on_vm_close when nginx
-- closes the Lua VM (the final shutdown).
function _M.host(on_vm_close, on_exit)
    if host then
        return host
    end
    if get_phase() == "init" then
        return nil, "not allowed in init_by_lua* (the master process):"
                    .. " runtime threads do not survive fork; use"
                    .. " init_worker_by_lua* or later"
    end

    local rc = C.nbffi_host_new(host_out,
                                bor(core.NOTIFY_SOCKET, core.LOG_QUEUE))
    if rc < 0 then
        return nil, "cannot create the nbffi host: " .. strerror(rc)
    end
    host = host_out[0]
    on_exit_start = on_exit
    events.attach(host)

    -- The final shutdown runs when nginx closes the Lua VM at worker exit,
    -- after the last request: as the finalizer of an object anchored in
    -- the registry, which nothing but lua_close collects.
    debug.getregistry()["resty.nbffi.vm_anchor"] =
        ffi.gc(ffi_new("char[1]"), on_vm_close)

    if worker_exiting() then
        return host             -- no timers any more: callers poll
    end
    local ok, err = timer_every(TICK, tick)
    if not ok then
        log(ERR, "nbffi: cannot start the tick timer: ", err)
    end
    start_dispatcher()
    return host
end


-- The host if made, else nil.
function _M.current()
    return host
end


-- Forgets the host (freed at worker exit).
function _M.forget()
    host = nil
    events.attach(nil)
end


-- The final shutdown: log lines go to fn (ngx.log can no longer be
-- used), and semaphores are not posted (theirs may be finalized already).
function _M.closing(fn)
    log = fn
    vm_closing = true
end


-- ngx.log, or during the final shutdown its stand-in.
function _M.log(...)
    return log(...)
end


-- The log level of the error log, read once.
function _M.log_level()
    return get_sys_filter_level()
end


-- Waits for rec's completion until its deadline: on the record's
-- semaphore while the dispatcher runs, else by reaping every POLL
-- seconds, doubling to POLL_MAX.  Returns the semaphore's error if it
-- cannot wait here at all.
-- Waits once for news of rec until its deadline: a post of the record's
-- semaphore while the dispatcher runs, else a sleep of poll seconds and a
-- reap.  Returns the next poll, or nil and the semaphore's error if it
-- cannot wait here at all, or nil when the deadline has passed.
local function wait_once(rec, poll)
    -- the deadline's own clock: nginx's cached time lags behind it
    local left = (rec.deadline - now_ns()) * 1e-9
    if left <= 0 then
        return nil
    end
    if dispatching then
        local sema = rec.sema
        if not sema then
            sema = waiters.sema()
            rec.sema = sema
        end
        rec.nwait = (rec.nwait or 0) + 1
        -- wait's granularity is 1 ms; less would not wait at all
        local ok, err = sema:wait(left < 0.001 and 0.001
                                  or math_min(left, MAX_WAIT))
        rec.posted = nil
        local nwait = rec.nwait - 1
        rec.nwait = nwait
        if nwait == 0 and rec.sema == sema then
            rec.sema = nil
            if ok and sema:count() == 0 then
                waiters.sema_put(sema)
            end
        end
        if not ok and err ~= "timeout" then
            return nil, err     -- cannot wait here at all
        end
        return poll
    end
    ngx_sleep(math_min(poll, left))
    if host then
        reap_all()
        if rec.stream then
            reap_streams()
        end
    end
    return math_min(poll * 2, POLL_MAX)
end
_M.wait_once = wait_once
_M.POLL = POLL


function _M.wait(rec)
    local poll = POLL
    while not rec.done and not rec.gone do
        local err
        poll, err = wait_once(rec, poll)
        if not poll then
            return err
        end
    end
end


function _M.stats()
    return {
        dispatching = dispatching,
        dispatcher_errors = errors,
        notifier_error = notifier_broken,
    }
end


return _M
