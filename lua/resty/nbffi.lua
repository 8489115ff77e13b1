-- resty.nbffi: call long-lived foreign runtimes (Go, Python, Java, C) that
-- live in their own threads inside the nginx worker, without blocking it.
--
-- A call posts a task through libnbffi and waits on an ngx.semaphore.  One
-- dispatcher per worker (a light thread in a timer) watches the host's
-- notifier socket as a cosocket, reaps completions in batches and posts the
-- semaphores of the waiting callers.  A caller's waiter record lives in a
-- Lua table, keyed by task id, until its completion is reaped or the caller
-- gives the task up; C holds no pointer to a Lua object but a lent payload
-- string, which the record keeps alive.

local ffi = require "ffi"
local semaphore = require "ngx.semaphore"
local get_sys_filter_level = require("ngx.errlog").get_sys_filter_level

local ngx = ngx
local ngx_log = ngx.log
local ngx_sleep = ngx.sleep
local ngx_tcp = ngx.socket.tcp
local get_phase = ngx.get_phase
local timer_at = ngx.timer.at
local timer_every = ngx.timer.every
local worker_exiting = ngx.worker.exiting
local ngx_worker_pid = ngx.worker.pid
local ALERT = ngx.ALERT
local ERR = ngx.ERR
local WARN = ngx.WARN
local NOTICE = ngx.NOTICE
local INFO = ngx.INFO
local DEBUG = ngx.DEBUG

local C
local ffi_new = ffi.new
local ffi_string = ffi.string
local ffi_gc = ffi.gc
local sema_new = semaphore.new
local bor = require("bit").bor

local error = error
local getmetatable = getmetatable
local setmetatable = setmetatable
local os_getenv = os.getenv
local io_open = io.open
local io_stderr = io.stderr
local os_date = os.date
local select = select
local table_concat = table.concat
local pairs = pairs
local tonumber = tonumber
local tostring = tostring
local type = type
local str_find = string.find
local co_running = coroutine.running
local str_format = string.format
local math_floor = math.floor
local math_huge = math.huge
local math_max = math.max
local math_min = math.min


local ABI = 1                   -- NBFFI_ABI_VERSION this file speaks

-- nbffi.h constants
local NOTIFY_SOCKET = 0x1
local LOG_QUEUE = 0x2
local LOAD_GLOBAL = 0x1
local CALL_BORROW = 0x1
local MAX_METHOD = 255
local EINVAL = -22
local ENOMEM = -12
local E2BIG = -7
local EQFULL = -11
local ECLOSED = -32
local ETIMEDOUT = -110

local REAP_BATCH = 64
local TICK = 1                  -- s between dispatcher wake-ups (sweep, logs)
local READ_TIMEOUT = 10000      -- ms; a backstop only: the tick wakes sooner
local POLL = 0.001              -- s between reaps when no dispatcher runs
local MAX_WAIT = 86400          -- s in one sema:wait (it takes int ms)
-- Deadlines (ns) from here on do not fit libnbffi's int64: such calls get
-- none there (a timeout of ~146 years or more).
local MAX_DEADLINE = 2 ^ 62
local LOG_BUF = 4096
local DEFAULT_TIMEOUT = 60      -- s
-- Spinning for a reply before yielding (see spin_for).  A yield costs
-- the event loop ~3 us of CPU and the reply ~20 us of latency (the wake),
-- so the budget follows what successful spins took, times SPIN_FACTOR.
local DEFAULT_SPIN = 20         -- us, the most a caller spins
local SPIN_FACTOR = 4
local SPIN_FLOOR = 2000         -- ns, least budget while spins succeed
local PROBE_MIN = 8             -- calls between probes once spins failed
local PROBE_MAX = 1024
-- Calls from different light threads less than this apart overlap (many
-- requests, or many threads of one): those callers yield instead of
-- spinning, so that their calls run together rather than one at a time.
local CONCURRENT_NS = 20000
-- Payloads from this size on are lent to the runtime by default, not
-- copied (opts.borrow_min); the string stays referenced by the waiter
-- record until the task is reaped.  Lending keeps the copy off the event
-- loop, but a reply of more than 64 bytes then needs an allocation and a
-- copy by the runtime, while a copied payload's space takes any reply up
-- to its size: an echo of 100 KB costs ~6 us copied and ~17 us lent here.
local BORROW_MIN = 1048576
local SEMA_POOL_MAX = 1024

-- Phases whose code may yield (wait on an ngx.semaphore).
local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
    preread = true,
}

local LEVEL_NAMES = {
    [ngx.STDERR] = "", [ngx.EMERG] = "emerg", [ALERT] = "alert",
    [ngx.CRIT] = "crit", [ERR] = "error", [WARN] = "warn",
    [NOTICE] = "notice", [INFO] = "info", [DEBUG] = "debug",
}

local LEVELS = {
    [3] = ERR, [4] = WARN, [5] = NOTICE, [6] = INFO, [7] = DEBUG,
}


if not pcall(ffi.typeof, "nbffi_stats_t") then
    ffi.cdef[[
    typedef struct nbffi_host_s     nbffi_host_t;
    typedef struct nbffi_runtime_s  nbffi_runtime_t;
    typedef struct nbffi_task_s     nbffi_task_t;

    typedef struct {
        uint64_t  posted;
        uint64_t  completed;
        uint64_t  failed;
        uint64_t  timed_out;
        uint64_t  abandoned;
        uint64_t  in_flight;
        uint64_t  queued;
        uint64_t  refused;
    } nbffi_stats_t;

    const char *nbffi_strerror(int err);
    unsigned nbffi_abi_version(void);
    int64_t nbffi_now_ns(void);

    int nbffi_host_new(nbffi_host_t **out, unsigned flags);
    int nbffi_host_free(nbffi_host_t *host);
    int nbffi_host_listen(nbffi_host_t *host, char *buf, size_t len);
    int nbffi_host_accept(nbffi_host_t *host);
    void nbffi_host_kick(nbffi_host_t *host);
    int nbffi_host_reap(nbffi_host_t *host, nbffi_task_t **out, int max);
    int nbffi_host_spin(nbffi_host_t *host, nbffi_task_t *task,
        int64_t spin_ns);
    uint64_t nbffi_host_tasks_live(nbffi_host_t *host);
    uint64_t nbffi_host_tasks_allocated(nbffi_host_t *host);
    uint64_t nbffi_host_tasks_freed(nbffi_host_t *host);
    int nbffi_host_log_next(nbffi_host_t *host, int *level, char *buf,
        size_t len, uint64_t *dropped);

    int nbffi_runtime_load(nbffi_host_t *host, const char *lib,
        const char *search_path, const void *cfg, size_t cfg_len,
        uint32_t max_queue, uint64_t max_payload, unsigned flags,
        nbffi_runtime_t **out, char *err, size_t err_len);
    void nbffi_runtime_close(nbffi_runtime_t *rt);
    void nbffi_runtime_free(nbffi_runtime_t *rt);
    void nbffi_runtime_stats(nbffi_runtime_t *rt, nbffi_stats_t *out);

    int nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt,
        const char *method, size_t mlen, const void *payload, size_t plen,
        int64_t deadline_ns, unsigned flags, nbffi_task_t **out);
    int nbffi_task_status(nbffi_task_t *task);
    const void *nbffi_task_reply(nbffi_task_t *task, size_t *len);
    void nbffi_task_release(nbffi_task_t *task);
    uint64_t nbffi_task_id(nbffi_task_t *task);
    ]]
end


-- libnbffi: $NBFFI_LIB (nginx.conf needs "env NBFFI_LIB;"), else
-- libnbffi.so next to the C modules of lua_package_cpath, else the
-- dynamic linker's own search.
local function open_core()
    local path = os_getenv("NBFFI_LIB")
    if path and path ~= "" then
        local ok, lib = pcall(ffi.load, path)
        if not ok then
            error("resty.nbffi: cannot load NBFFI_LIB=" .. path .. ": "
                  .. tostring(lib), 3)
        end
        return lib
    end

    for dir in package.cpath:gmatch("([^;]*)/%?%.so") do
        local f = io_open(dir .. "/libnbffi.so")
        if f then
            f:close()
            return ffi.load(dir .. "/libnbffi.so")
        end
    end

    local ok, lib = pcall(ffi.load, "nbffi")
    if not ok then
        ok, lib = pcall(ffi.load, "libnbffi.so.0")
    end
    if not ok then
        error("resty.nbffi: cannot find libnbffi (set NBFFI_LIB to its path"
              .. " and add \"env NBFFI_LIB;\" to nginx.conf): "
              .. tostring(lib), 3)
    end
    return lib
end

C = open_core()

if C.nbffi_abi_version() ~= ABI then
    error(str_format("resty.nbffi: libnbffi ABI version mismatch: need %d,"
                     .. " got %d", ABI, C.nbffi_abi_version()), 2)
end


local _M = { _VERSION = "0.1.0" }
local rt_mt = {}
local runtime = {}              -- methods of runtime objects

-- Per-worker state.  Each worker has its own Lua VM, so module upvalues are
-- per worker; the master never creates a host (threads do not survive
-- fork).
local host                      -- nbffi_host_t *, nil before first use
local vm_closing = false        -- the final shutdown runs (see there)
local log = ngx_log             -- exit_log during the final shutdown
local log_level = NOTICE        -- the error log's, read when the host is made
local waiters = {}              -- task id -> waiter record
local nwaiters = 0
local loaded = {}               -- lib .. "\0" .. cfg -> open runtime
local all_rts = {}              -- every runtime, freed at worker exit
local dispatching = false       -- the dispatcher is connected and reading
local dispatcher_started = false
local sema_pool = {}
local nsema_pool = 0
local next_sweep = 0

local host_out = ffi_new("nbffi_host_t *[1]")
local rt_out = ffi_new("nbffi_runtime_t *[1]")
local task_out = ffi_new("nbffi_task_t *[1]")
local reap_out = ffi_new("nbffi_task_t *[?]", REAP_BATCH)
local len_out = ffi_new("size_t[1]")
local stats_out = ffi_new("nbffi_stats_t")
local level_out = ffi_new("int[1]")
local dropped_out = ffi_new("uint64_t[1]")
local err_buf = ffi_new("char[?]", 1024)
local log_buf = ffi_new("char[?]", LOG_BUF)
local path_buf = ffi_new("char[?]", 256)


-- ngx.log for the final shutdown, when ngx.log itself can no longer be
-- used (it would follow the freed request of the last handler): writes
-- nginx's line format to stderr, which nginx points at its error log file.
local function exit_log(level, ...)
    if level > log_level then
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


-- CLOCK_MONOTONIC ns as a Lua number (exact to 2^53 ns: 104 days of
-- uptime; coarser after, which deadlines do not mind)
local function now_ns()
    return tonumber(C.nbffi_now_ns())
end


local function strerror(rc)
    return ffi_string(C.nbffi_strerror(rc))
end


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
        log(LEVELS[level_out[0]] or NOTICE, "nbffi runtime: ",
                ffi_string(log_buf, math_min(n, LOG_BUF - 1)))
    end
end


-- Drains every completion: stores the result in its waiter record,
-- releases the task and wakes the caller.
local function reap_all()
    local h = host
    while true do
        local n = C.nbffi_host_reap(h, reap_out, REAP_BATCH)
        for i = 0, n - 1 do
            local task = reap_out[i]
            local id = tonumber(C.nbffi_task_id(task))
            local rec = waiters[id]
            if rec then
                waiters[id] = nil
                nwaiters = nwaiters - 1
                if not rec.gone then
                    local p = C.nbffi_task_reply(task, len_out)
                    rec.status = C.nbffi_task_status(task)
                    rec.reply = ffi_string(p, len_out[0])
                    rec.done = true
                end
                C.nbffi_task_release(task)
                local sema = rec.sema
                if sema and not vm_closing then
                    sema:post(1)
                end
            else
                -- every task this module does not release has a record
                C.nbffi_task_release(task)
                log(ALERT, "nbffi: reaped task ", id, " has no waiter")
            end
        end
        if n < REAP_BATCH then
            return
        end
    end
end


-- The caller no longer waits for rec (timeout, or killed): give the task
-- up.  A lent payload must outlive the runtime's use of it, so such a task
-- stays unreleased, with its record, until its completion is reaped.
local function give_up(id, rec)
    rec.gone = true
    if not rec.payload then
        waiters[id] = nil
        nwaiters = nwaiters - 1
        C.nbffi_task_release(rec.task)
    end
end


-- true when nobody waits for rec any more: its deadline passed (a live
-- caller's sema:wait has returned), or the light thread waiting on its
-- semaphore was killed (client abort, ngx.exit from another thread, the
-- request ended): ngx.semaphore drops a killed waiter, so count() is no
-- longer negative.  A killed caller leaves no Lua code to release its task.
local function abandoned(rec, now)
    if rec.deadline < now then
        return true
    end
    local sema = rec.sema
    return sema ~= nil and sema:count() >= 0
end


-- Gives up the tasks of abandoned waiter records, at most once per TICK.
local function sweep(now)
    if now < next_sweep then
        return
    end
    next_sweep = now + TICK * 1e9
    for id, rec in pairs(waiters) do
        if not rec.gone and abandoned(rec, now) then
            give_up(id, rec)
        end
    end
end


-- Worker exit, from the finalizer of the VM anchor when nginx closes the
-- Lua VM: no request is left, so no call can come any more.  Frees the
-- runtimes (joining their threads; every task they still held completes
-- as closed), reaps what is left, logs the task counters and frees the
-- host.  Semaphores are not posted: theirs may be finalized already.
local function shutdown()
    vm_closing = true
    log = exit_log
    for i = #all_rts, 1, -1 do
        C.nbffi_runtime_free(all_rts[i]._ptr)
        all_rts[i] = nil
    end
    reap_all()
    drain_logs()

    local h = host
    local allocated = tonumber(C.nbffi_host_tasks_allocated(h))
    local freed = tonumber(C.nbffi_host_tasks_freed(h))
    local live = tonumber(C.nbffi_host_tasks_live(h))
    log(NOTICE, "nbffi: worker exit: tasks allocated=", allocated,
            " freed=", freed, " live=", live)

    local rc = C.nbffi_host_free(h)
    if rc < 0 then
        log(ALERT, "nbffi: cannot free the host at worker exit: ",
                strerror(rc), " (", live, " tasks live)")
    end
    host = nil
end


-- Wakes every sleeping caller, so that callers switch to reaping by
-- themselves while no dispatcher runs.
local function wake_all()
    for _, rec in pairs(waiters) do
        local sema = rec.sema
        if sema and not rec.gone then
            rec.sema = nil      -- posted: no longer a sign of a waiter
            sema:post(1)
        end
    end
end


local start_dispatcher


local function connect_notifier()
    local rc = C.nbffi_host_listen(host, path_buf, 256)
    if rc < 0 then
        return nil, "nbffi_host_listen: " .. strerror(rc)
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

    sock:settimeouts(1000, 1000, READ_TIMEOUT)
    return sock
end


local function dispatch(premature)
    if premature or worker_exiting() then
        dispatcher_started = false
        return
    end

    local sock, err = connect_notifier()
    if not sock then
        ngx_log(ERR, "nbffi: dispatcher: ", err,
                "; callers reap by themselves")
        dispatcher_started = false
        return
    end

    dispatching = true
    while true do
        local data
        data, err = sock:receiveany(64)
        if not data and err ~= "timeout" then
            break
        end
        reap_all()
        drain_logs()
        sweep(now_ns())
        if worker_exiting() then
            err = nil
            break
        end
    end
    dispatching = false
    dispatcher_started = false
    sock:close()
    -- waiting callers reap by themselves from now on
    wake_all()

    if err then
        -- the tick restarts it within a second
        ngx_log(ERR, "nbffi: dispatcher: notifier read failed: ", err,
                "; callers reap by themselves until it restarts")
    end
end


-- Once a second: wakes the dispatcher (sweep, runtime logs), or does its
-- work when none runs.  At worker exit the timer fires early and the kick
-- wakes the dispatcher at once, so that an old worker leaves promptly.
local function tick(premature)
    local h = host
    if not h then
        return
    end
    if dispatching then
        C.nbffi_host_kick(h)
        return
    end
    if premature then
        return
    end
    reap_all()
    drain_logs()
    sweep(now_ns())
    if not dispatcher_started then
        start_dispatcher()
    end
end


start_dispatcher = function()
    local ok, err = timer_at(0, dispatch)
    if not ok then
        ngx_log(ERR, "nbffi: cannot start the dispatcher: ", err)
        return
    end
    dispatcher_started = true
end


local function final_shutdown()
    local ok, err = pcall(shutdown)
    if not ok then
        log(ALERT, "nbffi: worker exit failed: ", err)
    end
end


local function get_host()
    if host then
        return host
    end
    if get_phase() == "init" then
        return nil, "not allowed in init_by_lua* (the master process):"
                    .. " runtime threads do not survive fork; use"
                    .. " init_worker_by_lua* or later"
    end

    local rc = C.nbffi_host_new(host_out, bor(NOTIFY_SOCKET, LOG_QUEUE))
    if rc < 0 then
        return nil, "cannot create the nbffi host: " .. strerror(rc)
    end
    host = host_out[0]
    log_level = get_sys_filter_level()

    -- The final shutdown runs when nginx closes the Lua VM at worker exit,
    -- after the last request: as the finalizer of an object anchored in
    -- the registry, which nothing but lua_close collects.
    debug.getregistry()["resty.nbffi.vm_anchor"] =
        ffi_gc(ffi_new("char[1]"), final_shutdown)

    if worker_exiting() then
        return host             -- no timers any more: callers poll
    end
    local ok, err = timer_every(TICK, tick)
    if not ok then
        ngx_log(ERR, "nbffi: cannot start the tick timer: ", err)
    end
    start_dispatcher()
    return host
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
    local spin = check_opt(opts, "spin", "number", "load") or DEFAULT_SPIN
    local borrow_min = check_opt(opts, "borrow_min", "number", "load")
                       or BORROW_MIN
    local global = check_opt(opts, "global", "boolean", "load")
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
    if not (timeout > 0 and timeout < math_huge) then      -- NaN too
        error("bad option 'timeout' to 'load' (positive number of seconds"
              .. " expected)", 2)
    end
    if not (spin >= 0 and spin < math_huge) then
        error("bad option 'spin' to 'load' (microseconds >= 0 expected)", 2)
    end
    if borrow_min < 0 or borrow_min ~= borrow_min then     -- NaN too
        error("bad option 'borrow_min' to 'load' (bytes >= 0 expected)", 2)
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
        return rt
    end

    local h, err = get_host()
    if not h then
        return nil, "nbffi.load: " .. err
    end

    local rc = C.nbffi_runtime_load(h, lib, search_path, cfg, #cfg,
                                    max_queue, max_payload,
                                    global and LOAD_GLOBAL or 0, rt_out,
                                    err_buf, 1024)
    if rc < 0 then
        return nil, strerror(rc) .. ": " .. ffi_string(err_buf)
    end

    rt = setmetatable({
        _ptr = rt_out[0],
        _key = key,
        _timeout = timeout,
        _spin_max = math_floor(spin * 1000),
        _spin_ns = math_floor(spin * 1000), -- current budget, adaptive
        _spin_avg = 0,                      -- ns successful spins took
        _probe_gap = PROBE_MIN,
        _probe_in = 0,
        _last_co = false,                   -- light thread of the last call
        _last_call = 0,                     -- ns it was posted
        _max_payload = max_payload > 0 and max_payload or 64 * 1048576,
        _borrow_min = borrow_min,
        _closed = false,
    }, rt_mt)
    loaded[key] = rt
    all_rts[#all_rts + 1] = rt
    drain_logs()
    return rt
end


local function result(rec)
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
    return strerror(rc)
end


-- Waits for rec's completion until its deadline: on the semaphore while
-- the dispatcher runs, else by reaping every POLL seconds.  Returns the
-- semaphore's error if it cannot wait at all.
local function wait(rec)
    while not rec.done and not rec.gone do
        -- the deadline's own clock: nginx's cached time lags behind it
        local left = (rec.deadline - now_ns()) * 1e-9
        if left <= 0 then
            return
        end
        if dispatching then
            local sema = rec.sema
            if not sema then
                if nsema_pool > 0 then
                    sema = sema_pool[nsema_pool]
                    sema_pool[nsema_pool] = nil
                    nsema_pool = nsema_pool - 1
                else
                    sema = sema_new(0)
                end
                rec.sema = sema
            end
            -- wait's granularity is 1 ms; less would not wait at all
            local ok, err = sema:wait(left < 0.001 and 0.001
                                      or math_min(left, MAX_WAIT))
            rec.sema = nil
            if not ok and err ~= "timeout" then
                return err      -- cannot wait here at all
            end
            -- a wait that got its post leaves count 0: reusable; after a
            -- timeout a post may still come, so never reuse that one
            if ok and nsema_pool < SEMA_POOL_MAX then
                nsema_pool = nsema_pool + 1
                sema_pool[nsema_pool] = sema
            end
        else
            ngx_sleep(math_min(POLL, left))
            if host then
                reap_all()
            end
        end
    end
end


-- true when the previous call on this runtime came from another light
-- thread less than CONCURRENT_NS ago (see there).
local function overlapping(self, now)
    local co = co_running()
    local overlap = co ~= self._last_co
                    and now - self._last_call < CONCURRENT_NS
    self._last_co = co
    self._last_call = now
    return overlap
end


-- Spins up to the runtime's adaptive budget for task's reply; true if it
-- came.  The budget follows the time successful spins took; failures halve
-- it, down to none, after which a full-budget probe is made every
-- probe_gap calls (the gap doubling while probes fail), so that a runtime
-- that became fast again is noticed.
local function spin_for(self, task)
    local budget = self._spin_ns
    if budget == 0 then
        local max = self._spin_max
        if max == 0 then
            return false
        end
        local left = self._probe_in - 1
        if left > 0 then
            self._probe_in = left
            return false
        end
        budget = max
    end

    local t0 = now_ns()
    if C.nbffi_host_spin(host, task, budget) ~= 0 then
        local avg = self._spin_avg
        avg = avg + (now_ns() - t0 - avg) * 0.125
        self._spin_avg = avg
        self._spin_ns = math_max(SPIN_FLOOR,
                                math_min(self._spin_max, SPIN_FACTOR * avg))
        self._probe_gap = PROBE_MIN
        return true
    end

    if self._spin_ns == 0 then
        self._probe_gap = math_min(self._probe_gap * 2, PROBE_MAX)
        self._probe_in = self._probe_gap
    else
        budget = math_floor(budget / 2)
        if budget < SPIN_FLOOR then
            budget = 0
            self._probe_in = self._probe_gap
        end
        self._spin_ns = budget
    end
    return false
end


-- Calls method with payload; returns the reply, or nil and an error.
function runtime.call(self, method, payload, opts)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'call' (runtime expected; use rt:call)",
              2)
    end

    local timeout = self._timeout
    local spin                  -- a fixed budget (ns) from opts, or nil
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
                spin = math_floor(s * 1000)
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

    if self._closed or not host then
        return nil, "closed"
    end

    local mlen = #method
    if mlen == 0 or mlen > MAX_METHOD or str_find(method, "\0", 1, true) then
        return nil, "invalid method name: must be 1.." .. MAX_METHOD
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
                            borrow and CALL_BORROW or 0,
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
    waiters[id] = rec
    nwaiters = nwaiters + 1

    -- A runtime thread that is spinning answers within a microsecond or
    -- two: reaping now saves the cross-thread wake and the yield.
    if spin then
        if spin > 0 and C.nbffi_host_spin(host, task, spin) ~= 0 then
            reap_all()
        end
    elseif not overlapping(self, now) and spin_for(self, task) then
        reap_all()
    end

    if not rec.done then
        local err = wait(rec)
        if not rec.done then
            if not rec.gone then
                give_up(id, rec)
            end
            return nil, err or "timeout"
        end
    end

    return result(rec)
end


function runtime.close(self)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'close' (runtime expected; use rt:close)",
              2)
    end
    if not self._closed then
        self._closed = true
        if loaded[self._key] == self then
            loaded[self._key] = nil
        end
        -- Freed at worker exit: freeing joins the runtime's threads, which
        -- may still be busy with tasks their callers gave up.
        C.nbffi_runtime_close(self._ptr)
    end
    return true
end


function runtime.stats(self)
    if getmetatable(self) ~= rt_mt then
        error("bad argument #1 to 'stats' (runtime expected; use rt:stats)",
              2)
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
    local h = host
    if not h then
        return nil, "no runtime loaded yet"
    end
    return {
        tasks_live = tonumber(C.nbffi_host_tasks_live(h)),
        tasks_allocated = tonumber(C.nbffi_host_tasks_allocated(h)),
        tasks_freed = tonumber(C.nbffi_host_tasks_freed(h)),
        waiters = nwaiters,
        dispatching = dispatching,
    }
end


return _M
