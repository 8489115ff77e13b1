-- resty.nbffi: call long-lived foreign runtimes (Go, Python, Java, C) that
-- live in their own threads inside the nginx worker, without blocking it.
--
-- The public API: nbffi.load, rt:call, rt:close, rt:state, rt:stats,
-- readiness (nbffi.ready, nbffi.serve_ready) and the worker-exit
-- shutdown.  A call posts a task through libnbffi and waits on its waiter
-- record (resty.nbffi.waiters) until this worker's dispatcher
-- (resty.nbffi.dispatcher) delivers the reply.  Starting and stopping a
-- runtime happen on threads of libnbffi; their outcome comes back as
-- life-cycle tasks, delivered like replies.

local ffi = require "ffi"
local core = require "resty.nbffi.core"
local waiters = require "resty.nbffi.waiters"
local dispatcher = require "resty.nbffi.dispatcher"
local spin = require "resty.nbffi.spin"
local metrics = require "resty.nbffi.metrics"
local stream = require "resty.nbffi.stream"
local events = require "resty.nbffi.events"
local encode_meta = require("resty.nbffi.meta").encode

local ngx = ngx
local get_phase = ngx.get_phase
local timer_every = ngx.timer.every
local ngx_worker_pid = ngx.worker.pid
local ALERT = ngx.ALERT
local ERR = ngx.ERR
local WARN = ngx.WARN
local NOTICE = ngx.NOTICE

local C = core.C
local now_ns = core.now_ns
local strerror = core.strerror
local observe = metrics.observe
local ffi_new = ffi.new
local ffi_string = ffi.string

local error = error
local getmetatable = getmetatable
local pairs = pairs
local setmetatable = setmetatable
local io_open = io.open
local io_stderr = io.stderr
local os_date = os.date
local pcall = pcall
local select = select
local table_concat = table.concat
local table_remove = table.remove
local table_sort = table.sort
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
local DEFAULT_PREFLIGHT_TIMEOUT = 10  -- s, a preflight's check
local PREFLIGHT_MSG = 2048      -- bytes of a preflight's message
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
-- The same key -> the runtime last loaded with it, until closed: a failed
-- one too (loaded forgets it, so that the next load tries again), for
-- readiness
local tracked = {}
local all_rts = {}              -- runtimes whose handle is not yet freed
local retired = {}              -- freed since the last metrics flush
local metrics_on                -- the flush timer runs
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
    if rt._m then
        retired[#retired + 1] = rt  -- its last counts are not flushed yet
    end
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

    -- streams whose readers are gone with their requests: cancelled first,
    -- so that no runtime thread waits for room while its runtime stops
    waiters.give_up_streams()

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


-- The metrics timer: this worker's counters and gauges to the dict.
local function flush_metrics(premature)
    local rts = {}
    for i = 1, #all_rts do
        local rt = all_rts[i]
        if rt._m then
            rts[#rts + 1] = { rt._m, runtime.stats(rt), runtime.state(rt) }
        end
    end
    for i = 1, #retired do
        rts[#rts + 1] = { retired[i]._m, retired[i]._last_stats }
        retired[i] = nil
    end
    local ok, err = pcall(metrics.flush, rts, premature)
    if not ok then
        dispatcher.log(ERR, "nbffi: metrics: ", err)
    end
end


local function get_host()
    local h, err = dispatcher.host(final_shutdown, on_exit_start)
    if h and not log_level then
        log_level = dispatcher.log_level()
        shutdown_ms = shutdown_timeout_ms()
    end
    if h and not metrics_on and metrics.enabled() then
        local ok, terr = timer_every(metrics.FLUSH, flush_metrics)
        if ok then
            metrics_on = true
        else
            dispatcher.log(ERR, "nbffi: cannot start the metrics timer: ",
                           terr)
        end
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


local function check_microseconds(v, name, fname)
    if not (v >= 0 and v < math_huge) then         -- NaN too
        error(str_format("bad option '%s' to '%s' (microseconds >= 0"
                         .. " expected)", name, fname), 3)
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


-- The options of nbffi.load that a later load of the same (lib, cfg)
-- cannot change: the runtime exists already.
local LOAD_OPTS = {
    "max_queue", "max_payload", "timeout", "load_timeout", "close_timeout",
    "spin", "runtime_spin", "borrow_min", "global", "search_path", "name",
}


-- A later load of rt's (lib, cfg) gets rt: says once which of the options
-- it gives differ from those rt was loaded with, and are thus ignored.
local function warn_ignored(rt, opts)
    if rt._warned then
        return
    end
    local first = rt._opts
    local ignored = {}
    for i = 1, #LOAD_OPTS do
        local k = LOAD_OPTS[i]
        local v = opts[k]
        if v ~= nil and v ~= first[k] then
            ignored[#ignored + 1] = k .. "=" .. tostring(v)
        end
    end
    if #ignored > 0 then
        rt._warned = true
        dispatcher.log(WARN, "nbffi.load: ", rt._name, " is loaded already:"
                       .. " options of this load ignored (the first load's"
                       .. " stay): ", table_concat(ignored, ", "))
    end
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
    local runtime_spin = check_opt(opts, "runtime_spin", "number", "load")
    local borrow_min = check_opt(opts, "borrow_min", "number", "load")
                       or BORROW_MIN
    local global = check_opt(opts, "global", "boolean", "load")
    local sched = check_opt(opts, "sched", "string", "load")
    local search_path = check_opt(opts, "search_path", "string", "load")
    local name = check_opt(opts, "name", "string", "load") or lib

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
    check_microseconds(spin_us, "spin", "load")
    if runtime_spin ~= nil then
        check_microseconds(runtime_spin, "runtime_spin", "load")
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
        warn_ignored(rt, opts)
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
    if runtime_spin then
        C.nbffi_runtime_set_spin(rt_out[0], math_floor(runtime_spin * 1000))
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
        _m = metrics.enabled() and metrics.new(name) or false,
        _name = name,
        -- the options in effect, for warn_ignored
        _opts = {
            max_queue = max_queue, max_payload = max_payload,
            timeout = timeout, load_timeout = load_timeout,
            close_timeout = close_timeout, spin = spin_us,
            runtime_spin = runtime_spin or false,
            borrow_min = borrow_min, global = global or false,
            search_path = search_path or false, name = name,
        },
        _warned = false,
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
    tracked[key] = rt
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
    local meta                  -- opts.meta, encoded
    if opts ~= nil then
        local t = type(opts)
        if t == "number" then
            timeout = opts
        elseif t == "table" then
            timeout = check_opt(opts, "timeout", "number", "call") or timeout
            local s = check_opt(opts, "spin", "number", "call")
            if s then
                check_microseconds(s, "spin", "call")
                spin_ns = math_floor(s * 1000)
            end
            if opts.meta ~= nil then
                local err
                meta, err = encode_meta(opts.meta, "call", 3)
                if not meta then
                    return nil, err
                end
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
    local rc
    if meta then
        rc = C.nbffi_call_ex(host, self._ptr, method, mlen, payload, plen,
                             meta, #meta,
                             deadline < MAX_DEADLINE and deadline or 0,
                             borrow and core.CALL_BORROW or 0, 0, task_out)
    else
        rc = C.nbffi_call(host, self._ptr, method, mlen, payload, plen,
                          deadline < MAX_DEADLINE and deadline or 0,
                          borrow and core.CALL_BORROW or 0,
                          task_out)
    end
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

    local m = self._m
    if not rec.done then
        local err = dispatcher.wait(rec)
        if not rec.done then
            if not rec.gone then
                waiters.give_up(id, rec)
            end
            if m then
                observe(m, method, now, false)
            end
            return nil, err or "timeout"
        end
    end

    if m then
        observe(m, method, now, rec.status == 0 and not rec.err)
    end
    return result(rec)
end


-- A call answered in chunks: for chunk, err in rt:stream(...) do ... end.
-- See resty.nbffi.stream.
function runtime.stream(self, method, payload, opts)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'stream' (runtime expected; use"
              .. " rt:stream)", 2)
    end
    return stream.open(self, method, payload, opts, call_error)
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
    if tracked[self._key] == self then
        tracked[self._key] = nil
    end

    -- a finite timeout of centuries stays a deadline libnbffi can hold
    local deadline = math_min(now_ns() + (timeout or self._close_timeout)
                              * 1e9, MAX_DEADLINE)
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


-- Readiness of this worker's runtimes named name (every one when nil):
-- true when all are ready, and one "name: state[: error]" line each,
-- sorted.  A name with no runtime is not ready.
local function readiness(name)
    if name ~= nil and type(name) ~= "string" then
        error("bad argument #1 to 'ready' (string expected, got "
              .. type(name) .. ")", 3)
    end
    local lines = {}
    local ok = true
    for _, rt in pairs(tracked) do
        if name == nil or rt._name == name then
            local state, err = runtime.state(rt)
            if state ~= "ready" then
                ok = false
            end
            lines[#lines + 1] = rt._name .. ": " .. state
                                .. (err and ": " .. tostring(err) or "")
        end
    end
    if name ~= nil and #lines == 0 then
        return false, name .. ": not loaded"
    end
    table_sort(lines)
    return ok, table_concat(lines, "\n")
end


-- true, or nil and why: for health checks, in any worker context.
function _M.ready(name)
    local ok, report = readiness(name)
    if ok then
        return true
    end
    return nil, report
end


-- A health check's whole answer, in content_by_lua*: 200 when ready, else
-- 503; the body lists the runtimes and their states.
function _M.serve_ready(name)
    local ok, report = readiness(name)
    ngx.status = ok and 200 or 503
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(report ~= "" and report or "no runtime loaded")
end


-- The user directive of the nginx.conf this master reads ("name" or
-- "name:group"), or nil: the file named by -c (else the build's conf
-- path) under the prefix, its top-level lines only (not its includes).
local function conf_user()
    local f = io_open("/proc/self/cmdline")
    local cmdline = f and f:read("*a") or ""
    if f then
        f:close()
    end
    local path = cmdline:match("%z%-c%z([^%z]+)")
                 or ngx.config.nginx_configure():match("%-%-conf%-path=(%S+)")
                 or "conf/nginx.conf"
    if path:sub(1, 1) ~= "/" then
        path = ngx.config.prefix() .. path
    end
    f = io_open(path)
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    for line in text:gmatch("[^\n]+") do
        local name, group = line:match("^%s*user%s+([%w_.-]+)%s*([%w_.-]*)"
                                       .. "%s*;")
        if name then
            return group ~= "" and name .. ":" .. group or name
        end
    end
    return nil
end


-- Checks in init_by_lua* (nginx's master) that lib would load and start
-- in the workers, without starting it here (libnbffi does it all in a
-- forked child); true, or nil and why.
function _M.preflight(lib, cfg, opts)
    if type(lib) ~= "string" then
        error("bad argument #1 to 'preflight' (string expected, got "
              .. type(lib) .. ")", 2)
    end
    if cfg == nil then
        cfg = ""
    elseif type(cfg) ~= "string" then
        error("bad argument #2 to 'preflight' (string expected, got "
              .. type(cfg) .. ")", 2)
    end
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("bad argument #3 to 'preflight' (table expected, got "
              .. type(opts) .. ")", 2)
    end
    local search_path = check_opt(opts, "search_path", "string", "preflight")
    local global = check_opt(opts, "global", "boolean", "preflight")
    local user = opts.user
    if user ~= nil and user ~= false and type(user) ~= "string" then
        error("bad option 'user' to 'preflight' (string or false expected,"
              .. " got " .. type(user) .. ")", 2)
    end
    local timeout = check_opt(opts, "timeout", "number", "preflight")
                    or DEFAULT_PREFLIGHT_TIMEOUT
    check_seconds(timeout, "timeout", "preflight")

    -- it blocks until the child is done: fine before nginx serves only
    if get_phase() ~= "init" then
        return nil, "nbffi.preflight: only in init_by_lua* (it blocks for"
                    .. " the check)"
    end
    if lib == "" or str_find(lib, "\0", 1, true)
       or (search_path and str_find(search_path, "\0", 1, true))
    then
        return nil, "nbffi.preflight: cannot load runtime library: empty"
                    .. " name, or a NUL byte in it or in search_path"
    end
    if user == nil then
        user = conf_user()
    elseif user == false then
        user = nil
    end

    local buf = ffi_new("char[?]", PREFLIGHT_MSG)
    local rc = C.nbffi_preflight(lib, search_path, cfg, #cfg,
                                 global and core.LOAD_GLOBAL or 0, user,
                                 now_ns() + timeout * 1e9, buf,
                                 PREFLIGHT_MSG)
    if rc ~= 0 then
        return nil, "nbffi.preflight: " .. strerror(rc) .. ": "
                    .. ffi_string(buf)
    end
    return true
end


-- The Prometheus text of every worker's runtimes, or nil and an error.
function _M.metrics_text()
    return metrics.text()
end


-- A Prometheus scrape's whole answer, in content_by_lua*.
function _M.metrics()
    local text, err = metrics.text()
    if not text then
        ngx.status = 500
        ngx.header["Content-Type"] = "text/plain"
        ngx.say("nbffi.metrics: ", err)
        return
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(text)
end


-- Registers fn(data, name) for the events named name ("*": events no
-- other handler takes) in this worker.  Handlers run in a timer, one
-- event at a time, in the order the runtimes emitted them.
function _M.on_event(name, fn)
    return events.on(name, fn)
end


-- Removes fn (or, without fn, every handler) of the events named name.
function _M.off_event(name, fn)
    return events.off(name, fn)
end


-- This worker's event counters: emitted, delivered, dropped, queued,
-- queued_bytes, max_events, max_bytes, handled, handler_errors.
function _M.event_stats()
    return events.stats()
end


-- Bounds this worker's event queue (nil or 0: keep a bound).
function _M.set_event_limit(max_events, max_bytes)
    if max_events ~= nil and (type(max_events) ~= "number"
                              or max_events < 0)
    then
        error("bad argument #1 to 'set_event_limit' (number >= 0"
              .. " expected)", 2)
    end
    if max_bytes ~= nil and (type(max_bytes) ~= "number" or max_bytes < 0)
    then
        error("bad argument #2 to 'set_event_limit' (number >= 0"
              .. " expected)", 2)
    end
    local h, err = get_host()
    if not h then
        return nil, err
    end
    return events.set_limit(max_events, max_bytes)
end


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
