-- resty.nbffi: call long-lived foreign runtimes (Go, Python, Java, C) that
-- live in their own threads inside the nginx worker, without blocking it.
--
-- The public API: nbffi.load, rt:call, rt:close, rt:state, rt:stats and
-- the worker-exit shutdown.  A call posts a task through libnbffi and
-- waits on its waiter record (resty.nbffi.waiters) until this worker's
-- dispatcher (resty.nbffi.dispatcher) delivers the reply.  Starting and
-- stopping a runtime happen on threads of libnbffi; their outcome comes
-- back as life-cycle tasks, delivered like replies.

local ffi = require "ffi"
local core = require "resty.nbffi.core"
local waiters = require "resty.nbffi.waiters"
local dispatcher = require "resty.nbffi.dispatcher"
local spin = require "resty.nbffi.spin"

local ngx = ngx
local get_phase = ngx.get_phase
local ngx_worker_pid = ngx.worker.pid
local ALERT = ngx.ALERT
local ERR = ngx.ERR
local WARN = ngx.WARN
local NOTICE = ngx.NOTICE

local C = core.C
local now_ns = core.now_ns
local strerror = core.strerror
local ffi_new = ffi.new
local ffi_string = ffi.string

local error = error
local getmetatable = getmetatable
local setmetatable = setmetatable
local io_stderr = io.stderr
local os_date = os.date
local pcall = pcall
local select = select
local table_concat = table.concat
local table_remove = table.remove
local tonumber = tonumber
local tostring = tostring
local type = type
local unpack = unpack
local str_find = string.find
local str_format = string.format
local math_floor = math.floor
local math_huge = math.huge
local math_max = math.max
local math_min = math.min

local E2BIG = core.E2BIG
local EINVAL = core.EINVAL
local ENOMEM = core.ENOMEM
local EQFULL = core.EQFULL
local ECLOSED = core.ECLOSED
local ETIMEDOUT = core.ETIMEDOUT
local EALREADY = core.EALREADY
local STATES = core.STATES


local DEFAULT_TIMEOUT = 60      -- s, a call
local DEFAULT_LOAD_TIMEOUT = 30 -- s, a start
local DEFAULT_CLOSE_TIMEOUT = 5 -- s, a stop, when nothing else says
local MIN_EXIT_CLOSE = 0.5      -- s a runtime gets at worker exit, at least
local DEFAULT_SPIN = 20         -- us, the most a caller spins
-- Deadlines (ns) from here on do not fit libnbffi's int64: such calls get
-- none there (a timeout of ~146 years or more).
local MAX_DEADLINE = 2 ^ 62
-- Payloads from this size on are lent to the runtime by default, not
-- copied (opts.borrow_min); the string stays referenced by the waiter
-- record until the task is reaped.  Lending keeps the copy off the event
-- loop, but a reply of more than 64 bytes then needs an allocation and a
-- copy by the runtime, while a copied payload's space takes any reply up
-- to its size: an echo of 100 KB costs ~6 us copied and ~17 us lent here.
local BORROW_MIN = 1048576

-- Phases whose code may yield (wait on an ngx.semaphore).
local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
    preread = true,
}

local LEVEL_NAMES = {
    [ngx.STDERR] = "", [ngx.EMERG] = "emerg", [ALERT] = "alert",
    [ngx.CRIT] = "crit", [ERR] = "error", [WARN] = "warn",
    [NOTICE] = "notice", [ngx.INFO] = "info", [ngx.DEBUG] = "debug",
}


local _M = { _VERSION = "0.2.0" }
local rt_mt = {}
local runtime = {}              -- methods of runtime objects

-- Per-worker state.  Each worker has its own Lua VM, so module upvalues are
-- per worker; the master never creates a host (threads do not survive
-- fork).
local loaded = {}               -- lib .. "\0" .. cfg -> runtime, not closed
local all_rts = {}              -- runtimes whose handle is not yet freed
local exit_started              -- ns when the worker began to exit
local shutdown_ms               -- worker_shutdown_timeout, read at start
local log_level               -- the error log's, read when the host is made

local rt_out = ffi_new("nbffi_runtime_t *[1]")
local task_out = ffi_new("nbffi_task_t *[1]")
local msg_out = ffi_new("const char *[1]")
local stats_out = ffi_new("nbffi_stats_t")


-- nginx's worker_shutdown_timeout in ms (0: unset), read from the nginx
-- binary's own configuration: ngx_core_conf_t begins with daemon, master,
-- timer_resolution, shutdown_timeout in every nginx since 1.11.11 (the
-- directive's release), OpenResty's included.  nil when the symbols are
-- not there (an nginx built without exporting them).  Read when the host
-- is made: neither ffi.cdef nor ffi.C may be used once nginx closes the VM.
local function shutdown_timeout_ms()
    local ok = pcall(ffi.cdef, [[
    typedef struct { void ****conf_ctx; } nbffi_ngx_cycle_t;
    typedef struct { uintptr_t ctx_index; uintptr_t index; }
        nbffi_ngx_module_t;
    typedef struct {
        intptr_t   daemon;
        intptr_t   master;
        uintptr_t  timer_resolution;
        uintptr_t  shutdown_timeout;
    } nbffi_ngx_core_conf_t;
    extern nbffi_ngx_cycle_t *nbffi_ngx_cycle __asm__("ngx_cycle");
    extern nbffi_ngx_module_t nbffi_ngx_core_module
        __asm__("ngx_core_module");
    ]])
    if not ok and not pcall(ffi.typeof, "nbffi_ngx_core_conf_t") then
        return nil
    end
    local ms
    ok = pcall(function()
        local cycle = ffi.C.nbffi_ngx_cycle
        local conf = cycle.conf_ctx[ffi.C.nbffi_ngx_core_module.index]
        ms = tonumber(ffi.cast("nbffi_ngx_core_conf_t *", conf)
                      .shutdown_timeout)
    end)
    -- a value past a day is not a timeout but a layout we do not know
    if not ok or not ms or ms > 86400000 then
        return nil
    end
    return ms
end


-- ngx.log for the final shutdown, when ngx.log itself can no longer be
-- used (it would follow the freed request of the last handler): writes
-- nginx's line format to stderr, which nginx points at its error log file.
local function exit_log(level, ...)
    if level > (log_level or NOTICE) then
        return
    end
    local msg = {}
    for i = 1, select("#", ...) do
        msg[i] = tostring((select(i, ...)))
    end
    local pid = ngx_worker_pid()
    -- one string, one write(): workers exiting together share the file,
    -- and stderr is unbuffered, so pieces written apart interleave
    io_stderr:write(os_date("%Y/%m/%d %H:%M:%S") .. " ["
                    .. LEVEL_NAMES[level] .. "] " .. pid .. "#" .. pid
                    .. ": " .. table_concat(msg) .. "\n")
end


-- Seconds runtimes get to stop at worker exit, unless their own close
-- timeout is shorter: what is left of nginx's worker_shutdown_timeout
-- since the exit began; at least MIN_EXIT_CLOSE.
local function exit_budget(now)
    local ms = shutdown_ms
    if not ms or ms == 0 then
        return DEFAULT_CLOSE_TIMEOUT
    end
    return math_max(MIN_EXIT_CLOSE,
                    ms / 1000 - (now - (exit_started or now)) * 1e-9)
end


-- Gives up rt's handle: after its close ended, or at worker exit.
local function free_handle(rt)
    if rt._freed then
        return
    end
    rt._last_stats = runtime.stats(rt)
    rt._freed = true
    C.nbffi_runtime_free(rt._ptr)
    for i = #all_rts, 1, -1 do
        if all_rts[i] == rt then
            table_remove(all_rts, i)
            break
        end
    end
end


-- Worker exit, from the finalizer of the VM anchor when nginx closes the
-- Lua VM: no request is left, so no call can come any more.  Closes every
-- runtime with its exit deadline and waits (blocking is fine now) until
-- each is closed or orphaned; then reaps what is left, logs the task
-- counters and frees the host.
local function shutdown()
    dispatcher.closing(exit_log)
    local h = dispatcher.current()
    local now = now_ns()
    local budget = exit_budget(now)
    local last = now
    local rts = { unpack(all_rts) }

    for i = 1, #rts do
        local rt = rts[i]
        local deadline = now + math_min(budget, rt._close_timeout) * 1e9
        last = math_max(last, deadline)
        if C.nbffi_runtime_close(rt._ptr, deadline, nil) == 0 then
            rt._state = "closing"
        end
    end
    for i = 1, #rts do
        -- the core gives up on fini shortly after the deadline
        C.nbffi_runtime_wait(rts[i]._ptr, last + 1e9)
        free_handle(rts[i])
    end

    -- life-cycle tasks of closes asked before complete soon after
    local until_ns = now_ns() + 1e9
    repeat
        dispatcher.reap_all()
        dispatcher.drain_logs()
    until tonumber(C.nbffi_host_tasks_live(h)) == 0
          or C.nbffi_host_wait(h, until_ns) == 0
    dispatcher.reap_all()
    dispatcher.drain_logs()

    local allocated = tonumber(C.nbffi_host_tasks_allocated(h))
    local freed = tonumber(C.nbffi_host_tasks_freed(h))
    local leaked = tonumber(C.nbffi_host_tasks_leaked(h))
    local live = tonumber(C.nbffi_host_tasks_live(h))
    exit_log(NOTICE, "nbffi: worker exit: tasks allocated=", allocated,
             " freed=", freed, " leaked=", leaked, " live=", live)

    local rc = C.nbffi_host_free(h)
    if rc < 0 then
        exit_log(ALERT, "nbffi: cannot free the host at worker exit: ",
                 strerror(rc), " (", live, " tasks live)")
    end
    dispatcher.forget()
end


local function final_shutdown()
    local ok, err = pcall(shutdown)
    if not ok then
        exit_log(ALERT, "nbffi: worker exit failed: ", err)
    end
end


local function on_exit_start()
    exit_started = now_ns()
end


local function get_host()
    local h, err = dispatcher.host(final_shutdown, on_exit_start)
    if h and not log_level then
        log_level = dispatcher.log_level()
        shutdown_ms = shutdown_timeout_ms()
    end
    return h, err
end


-- Starts this worker's dispatcher; one line in init_worker_by_lua*.  Also
-- done by the first nbffi.load.
function _M.init()
    local h, err = get_host()
    if not h then
        return nil, err
    end
    return true
end


local function check_opt(opts, name, want, fname)
    local v = opts[name]
    if v ~= nil and type(v) ~= want then
        error(str_format("bad option '%s' to '%s' (%s expected, got %s)",
                         name, fname, want, type(v)), 3)
    end
    return v
end


local function check_seconds(v, name, fname)
    if not (v > 0 and v < math_huge) then          -- NaN too
        error(str_format("bad option '%s' to '%s' (positive number of"
                         .. " seconds expected)", name, fname), 3)
    end
end


-- The message of a runtime's failed start.
local function start_error(rt, status)
    C.nbffi_runtime_error(rt._ptr, msg_out)
    return strerror(status) .. ": " .. ffi_string(msg_out[0])
end


-- The load task's completion: the runtime follows its start.
local function loaded_cb(rec)
    local rt = rec.rt
    if rec.status == 0 then
        rt._state = "ready"
        return
    end
    rt._state = "failed"
    rt._err = strerror(rec.status) .. ": " .. (rec.reply or "")
    -- once, at error level, whoever waits or not
    dispatcher.log(ERR, "nbffi: ", rt._err)
    if loaded[rt._key] == rt then
        loaded[rt._key] = nil   -- the next load tries again
    end
end


-- The close task's completion.
local function closed_cb(rec)
    local rt = rec.rt
    if rec.status == 0 then
        rt._state = "closed"
    else
        rt._state = "orphaned"  -- libnbffi logged why
        rt._err = rec.reply
    end
    free_handle(rt)
end


-- Waits, if this phase can, until rt's start has ended; rt or nil, err.
local function wait_started(rt)
    local rec = rt._load_rec
    if rec and not rec.done and YIELDABLE[get_phase()] then
        local err = dispatcher.wait(rec)
        if err then
            return nil, "cannot wait for the runtime's start: " .. err
        end
        if not rec.done then
            return nil, "runtime start timed out"
        end
    end
    if rt._state == "failed" then
        return nil, rt._err
    end
    return rt
end


-- Loads a runtime library and starts a runtime in it, once per worker for
-- the same (lib, cfg).
function _M.load(lib, cfg, opts)
    if type(lib) ~= "string" then
        error("bad argument #1 to 'load' (string expected, got "
              .. type(lib) .. ")", 2)
    end
    if cfg == nil then
        cfg = ""
    elseif type(cfg) ~= "string" then
        error("bad argument #2 to 'load' (string expected, got "
              .. type(cfg) .. ")", 2)
    end
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("bad argument #3 to 'load' (table expected, got "
              .. type(opts) .. ")", 2)
    end

    local max_queue = check_opt(opts, "max_queue", "number", "load") or 0
    local max_payload = check_opt(opts, "max_payload", "number", "load") or 0
    local timeout = check_opt(opts, "timeout", "number", "load")
                    or DEFAULT_TIMEOUT
    local load_timeout = check_opt(opts, "load_timeout", "number", "load")
                         or DEFAULT_LOAD_TIMEOUT
    local close_timeout = check_opt(opts, "close_timeout", "number", "load")
                          or DEFAULT_CLOSE_TIMEOUT
    local spin_us = check_opt(opts, "spin", "number", "load") or DEFAULT_SPIN
    local borrow_min = check_opt(opts, "borrow_min", "number", "load")
                       or BORROW_MIN
    local global = check_opt(opts, "global", "boolean", "load")
    local sched = check_opt(opts, "sched", "string", "load")
    local search_path = check_opt(opts, "search_path", "string", "load")

    if max_queue < 0 or max_queue > 0xffffffff
       or max_queue ~= math_floor(max_queue)
    then
        error("bad option 'max_queue' to 'load' (integer 0..2^32-1"
              .. " expected; 0: the default)", 2)
    end
    if max_payload < 0 or max_payload ~= math_floor(max_payload) then
        error("bad option 'max_payload' to 'load' (non-negative integer"
              .. " expected)", 2)
    end
    check_seconds(timeout, "timeout", "load")
    check_seconds(load_timeout, "load_timeout", "load")
    check_seconds(close_timeout, "close_timeout", "load")
    if not (spin_us >= 0 and spin_us < math_huge) then
        error("bad option 'spin' to 'load' (microseconds >= 0 expected)", 2)
    end
    if borrow_min < 0 or borrow_min ~= borrow_min then     -- NaN too
        error("bad option 'borrow_min' to 'load' (bytes >= 0 expected)", 2)
    end
    if sched ~= nil and sched ~= "batch" and sched ~= "normal" then
        error("bad option 'sched' to 'load' (\"batch\" or \"normal\""
              .. " expected)", 2)
    end

    if lib == "" then
        return nil, "cannot load runtime library: empty name"
    end
    -- C would see only what comes before a NUL
    if str_find(lib, "\0", 1, true) then
        return nil, "cannot load runtime library: name contains a NUL byte"
    end
    if search_path and str_find(search_path, "\0", 1, true) then
        return nil, "cannot load runtime library: search_path contains a"
                    .. " NUL byte"
    end

    local key = lib .. "\0" .. cfg
    local rt = loaded[key]
    if rt then
        return wait_started(rt)
    end

    local h, err = get_host()
    if not h then
        return nil, "nbffi.load: " .. err
    end

    local now = now_ns()
    local deadline = now + load_timeout * 1e9
    local rc = C.nbffi_runtime_load(h, lib, search_path, cfg, #cfg,
                                    max_queue, max_payload,
                                    deadline < MAX_DEADLINE and deadline or 0,
                                    (global and core.LOAD_GLOBAL or 0)
                                    + (sched == "normal"
                                       and core.LOAD_SCHED_NORMAL or 0),
                                    rt_out, task_out)
    if rc < 0 then
        return nil, "cannot start the runtime: " .. strerror(rc)
    end

    rt = setmetatable({
        _ptr = rt_out[0],
        _key = key,
        _state = "starting",
        _timeout = timeout,
        _close_timeout = close_timeout,
        _spin = spin.new(math_floor(spin_us * 1000)),
        _max_payload = max_payload > 0 and max_payload or 64 * 1048576,
        _borrow_min = borrow_min,
        -- every field set: a missing one would read as a method (rt:NAME)
        _closed = false,
        _freed = false,
        _err = false,
        _load_rec = false,
        _last_stats = false,
    }, rt_mt)

    local task = task_out[0]
    local rec = {
        task = task,
        -- the core completes the load task at the start deadline
        deadline = deadline + 1e9,
        rt = rt,
        on_done = loaded_cb,
    }
    waiters.add(tonumber(C.nbffi_task_id(task)), rec)
    rt._load_rec = rec

    loaded[key] = rt
    all_rts[#all_rts + 1] = rt
    return wait_started(rt)
end


local function result(rec)
    if rec.err then
        return nil, rec.err
    end
    local status = rec.status
    if status == 0 then
        return rec.reply
    end
    if status > 0 then
        return nil, "runtime error " .. status .. ": " .. rec.reply, status
    end
    if status == ETIMEDOUT then
        return nil, "timeout", status
    end
    if status == ECLOSED then
        return nil, "closed", status
    end
    local msg = strerror(status)
    if rec.reply ~= "" then
        msg = msg .. ": " .. rec.reply
    end
    return nil, msg, status
end


local function call_error(self, rc, plen)
    if rc == ECLOSED then
        return "closed"
    end
    if rc == EQFULL then
        return "queue full"
    end
    if rc == E2BIG then
        return "payload too large: " .. plen .. " bytes (max_payload is "
               .. self._max_payload .. ")"
    end
    if rc == EINVAL then
        return "invalid method name"
    end
    if rc == ENOMEM then
        return "out of memory"
    end
    if rc <= core.ELOAD and rc >= core.EINIT then
        return start_error(self, rc)
    end
    return strerror(rc)
end


-- Calls method with payload; returns the reply, or nil and an error.
function runtime.call(self, method, payload, opts)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'call' (runtime expected; use rt:call)",
              2)
    end

    local timeout = self._timeout
    local spin_ns               -- a fixed budget (ns) from opts, or nil
    if opts ~= nil then
        local t = type(opts)
        if t == "number" then
            timeout = opts
        elseif t == "table" then
            timeout = check_opt(opts, "timeout", "number", "call") or timeout
            local s = check_opt(opts, "spin", "number", "call")
            if s then
                if not (s >= 0 and s < math_huge) then
                    error("bad option 'spin' to 'call' (microseconds >= 0"
                          .. " expected)", 2)
                end
                spin_ns = math_floor(s * 1000)
            end
        else
            error("bad argument #3 to 'call' (number or table expected, got "
                  .. t .. ")", 2)
        end
        if not (timeout > 0 and timeout < math_huge) then  -- NaN too
            error("bad timeout to 'call' (positive number of seconds"
                  .. " expected)", 2)
        end
    end

    if type(method) ~= "string" then
        return nil, "method must be a string, got " .. type(method)
    end
    if type(payload) ~= "string" then
        return nil, "payload must be a string, got " .. type(payload)
    end

    local phase = get_phase()
    if not YIELDABLE[phase] then
        return nil, "cannot call a runtime in the " .. phase .. " phase:"
                    .. " it cannot yield (call from rewrite, access, content"
                    .. " or an ngx.timer)"
    end

    local host = dispatcher.current()
    if self._closed or not host then
        return nil, "closed"
    end

    local mlen = #method
    if mlen == 0 or mlen > core.MAX_METHOD
       or str_find(method, "\0", 1, true)
    then
        return nil, "invalid method name: must be 1.." .. core.MAX_METHOD
                    .. " bytes without NUL"
    end

    local plen = #payload
    if plen > self._max_payload then
        return nil, call_error(self, E2BIG, plen)
    end

    local borrow = plen >= self._borrow_min
    local now = now_ns()
    local deadline = now + timeout * 1e9
    local rc = C.nbffi_call(host, self._ptr, method, mlen, payload, plen,
                            deadline < MAX_DEADLINE and deadline or 0,
                            borrow and core.CALL_BORROW or 0,
                            task_out)
    if rc < 0 then
        return nil, call_error(self, rc, plen)
    end

    local task = task_out[0]
    local id = tonumber(C.nbffi_task_id(task))
    local rec = {
        task = task,
        payload = borrow and payload or nil,   -- pins a lent payload
        deadline = deadline,            -- ns, nbffi_now_ns() clock
    }
    waiters.add(id, rec)

    -- A runtime thread that is spinning answers within a microsecond or
    -- two: reaping now saves the cross-thread wake and the yield.
    if spin_ns then
        if spin_ns > 0 and C.nbffi_host_spin(host, task, spin_ns) ~= 0 then
            dispatcher.reap()
        end
    elseif not spin.overlapping(self._spin, now)
           and spin.try(self._spin, host, task)
    then
        dispatcher.reap()
    end

    if not rec.done then
        local err = dispatcher.wait(rec)
        if not rec.done then
            if not rec.gone then
                waiters.give_up(id, rec)
            end
            return nil, err or "timeout"
        end
    end

    return result(rec)
end


-- Closes the runtime: no new calls, queued calls still run, its fini runs
-- on a thread of libnbffi with a deadline.  Returns at once.
function runtime.close(self, timeout)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'close' (runtime expected; use rt:close)",
              2)
    end
    if timeout ~= nil then
        if type(timeout) ~= "number" then
            error("bad argument #2 to 'close' (number expected, got "
                  .. type(timeout) .. ")", 2)
        end
        check_seconds(timeout, "timeout", "close")
    end
    if self._closed then
        return true
    end
    self._closed = true
    if loaded[self._key] == self then
        loaded[self._key] = nil
    end

    local deadline = now_ns() + (timeout or self._close_timeout) * 1e9
    local rc = C.nbffi_runtime_close(self._ptr, deadline, task_out)
    if rc == EALREADY then
        return true
    end
    if rc < 0 then
        return nil, "cannot close the runtime: " .. strerror(rc)
    end
    if self._state ~= "failed" then
        self._state = "closing"
    end
    local task = task_out[0]
    waiters.add(tonumber(C.nbffi_task_id(task)), {
        task = task,
        deadline = deadline + 1e9,
        rt = self,
        on_done = closed_cb,
    })
    return true
end


-- "starting", "ready", "failed", "closing", "closed" or "orphaned", and
-- the error of a failed or orphaned runtime.
function runtime.state(self)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'state' (runtime expected; use rt:state)",
              2)
    end
    local state = self._freed and self._state
                  or STATES[C.nbffi_runtime_state(self._ptr)]
    if state == "ready" and self._closed then
        state = "closing"       -- until libnbffi's thread takes it up
    end
    if state == "failed" or state == "orphaned" then
        return state, self._err
    end
    return state
end


function runtime.stats(self)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'stats' (runtime expected; use rt:stats)",
              2)
    end
    if self._freed then
        return self._last_stats
    end
    C.nbffi_runtime_stats(self._ptr, stats_out)
    local s = stats_out
    return {
        posted = tonumber(s.posted),
        completed = tonumber(s.completed),
        failed = tonumber(s.failed),
        timed_out = tonumber(s.timed_out),
        abandoned = tonumber(s.abandoned),
        in_flight = tonumber(s.in_flight),
        queued = tonumber(s.queued),
        refused = tonumber(s.refused),
    }
end


-- rt:NAME(payload [, opts]) is rt:call("NAME", payload [, opts]).
setmetatable(runtime, {
    __index = function(_, name)
        if type(name) ~= "string" then
            return nil
        end
        local m = function(self, payload, opts)
            return runtime.call(self, name, payload, opts)
        end
        runtime[name] = m
        return m
    end,
})
rt_mt.__index = runtime


-- This worker's task counters, for tests and monitoring.
function _M.host_stats()
    local h = dispatcher.current()
    if not h then
        return nil, "no runtime loaded yet"
    end
    local d = dispatcher.stats()
    return {
        tasks_live = tonumber(C.nbffi_host_tasks_live(h)),
        tasks_allocated = tonumber(C.nbffi_host_tasks_allocated(h)),
        tasks_freed = tonumber(C.nbffi_host_tasks_freed(h)),
        tasks_leaked = tonumber(C.nbffi_host_tasks_leaked(h)),
        waiters = waiters.count(),
        dispatching = d.dispatching,
        dispatcher_errors = d.dispatcher_errors,
        notifier_error = d.notifier_error,
        runtimes = #all_rts,
    }
end


return _M
