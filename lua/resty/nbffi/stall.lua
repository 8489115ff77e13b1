-- resty.nbffi.stall: names what blocks an nginx worker's event loop.
--
-- One line in init_worker_by_lua* turns it on:
--     require("resty.nbffi.stall").start()
-- A light thread beats a heartbeat every threshold/10 (at most 10 ms);
-- libnbffi_stall's watchdog thread sees it go late, has LuaJIT's profiler
-- take backtraces until it beats again, and times the loop thread's CPU
-- against the wall clock.  Each stall is logged (one summary line, then
-- the top backtraces) and kept; stall.recent() returns the last ones as
-- tables.  It does not need libnbffi: only LuaJIT, lua-nginx-module and
-- libnbffi_stall.  docs/stall.md says more.

local ffi = require "ffi"

local ngx = ngx
local ngx_log = ngx.log
local ngx_now = ngx.now
local update_time = ngx.update_time
local get_phase = ngx.get_phase
local timer_at = ngx.timer.at
local ngx_sleep = ngx.sleep
local worker_exiting = ngx.worker.exiting
local worker_pid = ngx.worker.pid
local ERR = ngx.ERR
local WARN = ngx.WARN

local ffi_new = ffi.new
local ffi_string = ffi.string
local ffi_gc = ffi.gc

local error = error
local os_getenv = os.getenv
local package = package
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local tonumber = tonumber
local tostring = tostring
local type = type
local math_max = math.max
local math_min = math.min
local str_format = string.format
local str_gmatch = string.gmatch
local str_match = string.match
local table_concat = table.concat
local table_remove = table.remove
local table_sort = table.sort


local ABI = 1                   -- NBFFI_STALL_ABI this file speaks
local MIN_THRESHOLD = 0.01      -- s
local MAX_BEAT = 0.01           -- s between heartbeats, at most
local MIN_BEAT = 0.001
local EXIT_KICK = 365 * 86400   -- s: a timer that only fires at worker exit
local LOG_LINE_MAX = 1800       -- bytes of frames in one error.log line
                                -- (nginx cuts an entry at 2048)

local DEFAULTS = {
    threshold = 0.1,            -- s: a stall is a loop away this long
    interval = 0.001,           -- s between samples during a stall
    depth = 20,                 -- frames per backtrace
    keep = 20,                  -- stalls kept for stall.recent()
    top = 5,                    -- backtraces logged per stall
    log_level = WARN,           -- false: no log lines
}

local VM_NAMES = { "compiled", "interpreted", "c", "gc", "compiler" }


if not pcall(ffi.typeof, "nbffi_stall_report_t") then
    ffi.cdef[[
typedef struct {
    uint64_t  seq;
    uint64_t  start_ns;
    uint64_t  wall_ns;
    uint64_t  cpu_ns;
    uint64_t  runq_ns;
    uint32_t  samples;
    uint32_t  lost;
    uint32_t  nstacks;
    uint32_t  vm[5];
} nbffi_stall_report_t;

typedef struct {
    const char  *context;
    size_t       context_len;
    const char  *frames;
    size_t       frames_len;
    uint32_t     samples;
    uint32_t     vm[5];
    uint64_t     cpu_ns;
    uint64_t     wait_ns;
    uint64_t     runq_ns;
} nbffi_stall_stack_t;

typedef struct {
    int       running;
    uint64_t  beats;
    uint64_t  stalls;
    uint64_t  suspects;
    uint64_t  samples;
    uint64_t  signals;
    uint64_t  wakes;
    uint64_t  spurious;
    uint64_t  late;
} nbffi_stall_stats_t;

unsigned nbffi_stall_abi(void);
int nbffi_stall_beat(void);
int nbffi_stall_report(nbffi_stall_report_t *out);
int nbffi_stall_stack(uint32_t i, nbffi_stall_stack_t *out);
void nbffi_stall_release(void);
void nbffi_stall_stats(nbffi_stall_stats_t *out);
void nbffi_stall_shutdown(void);
]]
end


local _M = { _VERSION = "0.1.0" }

local C                         -- libnbffi_stall through the FFI
local c_start, c_stop           -- its Lua C functions
-- Its finalizer joins the watchdog when the VM closes; it is only held.
local closers = {}              -- luacheck: no unused

local running = false
local gen = 0                   -- heartbeats of older starts stop
local cfg                       -- options in force
local period                    -- s between heartbeats
local kicked = false            -- the exit kick timer is armed
local kept = {}                 -- reports, oldest first

local report_buf = ffi_new("nbffi_stall_report_t")
local stack_buf = ffi_new("nbffi_stall_stack_t")
local stats_buf = ffi_new("nbffi_stall_stats_t")


-- ---- the library ----------------------------------------------------------

-- libnbffi_stall: opts.lib, $NBFFI_STALL_LIB (nginx.conf needs "env
-- NBFFI_STALL_LIB;"), libnbffi_stall.so on lua_package_cpath, else the
-- dynamic linker's search.
local function lib_path(opt)
    if opt then
        return opt
    end
    local env = os_getenv("NBFFI_STALL_LIB")
    if env and env ~= "" then
        return env
    end
    return package.searchpath("libnbffi_stall", package.cpath)
           or "libnbffi_stall.so"
end


local function load_lib(opt)
    if C then
        return true
    end

    local path = lib_path(opt)
    local start, err = package.loadlib(path, "nbffi_stall_lua_start")
    if not start then
        return nil, "cannot load " .. path .. ": " .. tostring(err)
    end
    local stop = package.loadlib(path, "nbffi_stall_lua_stop")
    local ok, lib = pcall(ffi.load, path)
    if not ok or not stop then
        return nil, "cannot load " .. path .. ": " .. tostring(lib)
    end

    local abi = lib.nbffi_stall_abi()
    if abi ~= ABI then
        return nil, str_format("libnbffi_stall ABI version mismatch: need %d,"
                               .. " got %d", ABI, abi)
    end

    -- lua_close stops LuaJIT's profiler first, then runs finalizers: this
    -- one joins the watchdog.  The function is fetched now, while the
    -- library's namespace is alive.
    local shutdown = lib.nbffi_stall_shutdown
    closers[1] = ffi_gc(ffi_new("char[1]"), function() shutdown() end)

    C, c_start, c_stop = lib, start, stop
    return true
end


-- ---- reports --------------------------------------------------------------

local function ms(ns)
    return tonumber(ns) / 1e6
end


local function vm_counts(v)
    local t = {}
    for i = 1, #VM_NAMES do
        t[VM_NAMES[i]] = tonumber(v[i - 1])
    end
    return t
end


-- "where\31name\30" per frame, innermost first.  LuaJIT names a function
-- it has no name for by its chunk:firstline: dropped.
local function parse_frames(s)
    local frames = {}
    for where, name in str_gmatch(s, "([^\30\31]*)\31([^\30]*)\30") do
        local chunk = str_match(where, "^(.*):%d+$")
        if name == "" or name == where
           or (chunk and str_match(name, "^(.*):%d+$") == chunk)
        then
            name = nil
        end
        frames[#frames + 1] = { where = where, name = name }
    end
    return frames
end


local function frames_text(frames)
    local parts, len = {}, 0
    for i = 1, #frames do
        local f = frames[i]
        local s = f.name and (f.where .. " (" .. f.name .. ")") or f.where
        len = len + #s + 3
        if len > LOG_LINE_MAX then
            parts[#parts + 1] = "..."
            break
        end
        parts[#parts + 1] = s
    end
    return table_concat(parts, " < ")
end


local function by_weight(a, b)
    local wa, wb = a.cpu_ms + a.wait_ms, b.cpu_ms + b.wait_ms
    if wa ~= wb then
        return wa > wb
    end
    return a.samples > b.samples
end


-- The finished stall, as a table (C.nbffi_stall_beat() returned 1).
local function read_report()
    local rep = report_buf
    if C.nbffi_stall_report(rep) ~= 0 then
        return nil
    end

    local backtraces = {}
    for i = 0, rep.nstacks - 1 do
        if C.nbffi_stall_stack(i, stack_buf) == 0 then
            local s = stack_buf
            backtraces[#backtraces + 1] = {
                samples = tonumber(s.samples),
                cpu_ms = ms(s.cpu_ns),
                wait_ms = ms(s.wait_ns),
                runqueue_ms = ms(s.runq_ns),
                context = ffi_string(s.context, s.context_len),
                vm = vm_counts(s.vm),
                frames = parse_frames(ffi_string(s.frames, s.frames_len)),
            }
        end
    end
    table_sort(backtraces, by_weight)

    update_time()
    local duration, cpu = ms(rep.wall_ns), ms(rep.cpu_ns)
    return {
        id = tonumber(rep.seq),
        pid = worker_pid(),
        time = ngx_now(),
        duration_ms = duration,
        cpu_ms = cpu,
        wait_ms = math_max(duration - cpu - ms(rep.runq_ns), 0),
        runqueue_ms = ms(rep.runq_ns),
        threshold_ms = cfg.threshold * 1000,
        context = backtraces[1] and backtraces[1].context or "unknown",
        samples = tonumber(rep.samples),
        lost = tonumber(rep.lost),
        vm = vm_counts(rep.vm),
        backtraces = backtraces,
    }
end


local function log_report(r)
    local level = cfg.log_level
    if not level then
        return
    end

    local vm = r.vm
    ngx_log(level, str_format(
        "stall %d: %.1f ms in %s, cpu %.1f ms, wait %.1f ms (run queue "
        .. "%.1f ms), %d samples (compiled %d, interpreted %d, C %d, GC %d,"
        .. " compiler %d), %d backtraces, threshold %d ms",
        r.id, r.duration_ms, r.context, r.cpu_ms, r.wait_ms, r.runqueue_ms,
        r.samples, vm.compiled, vm.interpreted, vm.c, vm.gc, vm.compiler,
        #r.backtraces, r.threshold_ms))

    local n = math_min(#r.backtraces, cfg.top)
    for i = 1, n do
        local b = r.backtraces[i]
        ngx_log(level, str_format(
            "stall %d backtrace %d/%d: %d samples, cpu %.1f ms, wait %.1f ms,"
            .. " run queue %.1f ms, %s: %s", r.id, i, #r.backtraces,
            b.samples, b.cpu_ms, b.wait_ms, b.runqueue_ms, b.context,
            frames_text(b.frames)))
    end
end


local function collect()
    local r = read_report()
    if not r then
        return
    end
    kept[#kept + 1] = r
    while #kept > cfg.keep do
        table_remove(kept, 1)
    end
    log_report(r)
end


-- ---- heartbeat ------------------------------------------------------------

local function stop_running()
    if running then
        running = false
        gen = gen + 1
        c_stop()
    end
end


local function collect_ready()
    local ok, err = pcall(collect)
    C.nbffi_stall_release()
    if not ok then
        ngx_log(ERR, "stall: report failed: ", err)
    end
end


-- The heartbeat: one light thread in a timer that sleeps and beats (a
-- sleep costs a timer event and a resume; a timer per beat would cost a
-- fake request each).  The C side knows this function (by its source and
-- line) and drops a sample taken in it, as one taken after its stall
-- ended: right after a sleep, this function is what runs first.
local function heartbeat(premature, g)
    if premature then
        return
    end
    while g == gen do
        if worker_exiting() then
            -- Old workers serve on after a reload, but no more beats.
            stop_running()
            return
        end
        if C.nbffi_stall_beat() == 1 then
            collect_ready()
        end
        ngx_sleep(period)
    end
end


-- ngx.sleep events are not cancelled at worker exit: the loop above sees
-- ngx.worker.exiting() within a beat.  This kick stops the detector at
-- once when the worker exits (timers get premature = true).
local function exit_kick(premature)
    if premature then
        stop_running()
    end
end


-- ---- API ------------------------------------------------------------------

local function check_opts(opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("bad argument #1 to 'start' (table expected, got "
              .. type(opts) .. ")", 3)
    end
    opts = opts or {}

    local o = {}
    for k, v in pairs(DEFAULTS) do
        o[k] = v
    end
    for k, v in pairs(opts) do
        if DEFAULTS[k] == nil and k ~= "lib" then
            error("bad argument #1 to 'start' (unknown option '"
                  .. tostring(k) .. "')", 3)
        end
        o[k] = v
    end

    for _, k in ipairs({ "threshold", "interval", "depth", "keep", "top" }) do
        if type(o[k]) ~= "number" or o[k] <= 0 then
            error("bad argument #1 to 'start' (option '" .. k
                  .. "' must be a positive number)", 3)
        end
    end
    if o.threshold < MIN_THRESHOLD then
        error("bad argument #1 to 'start' (threshold below "
              .. MIN_THRESHOLD .. " s)", 3)
    end
    if o.log_level ~= false and type(o.log_level) ~= "number" then
        error("bad argument #1 to 'start' (log_level must be an ngx log "
              .. "level or false)", 3)
    end
    if o.lib ~= nil and type(o.lib) ~= "string" then
        error("bad argument #1 to 'start' (option 'lib' must be a string)", 3)
    end
    return o
end


-- ok, err = stall.start(opts?)   init_worker_by_lua* or later.  Starting
-- again restarts with the new options.
function _M.start(opts)
    local o = check_opts(opts)

    if get_phase() == "init" then
        return nil, "stall.start must run in a worker (init_worker_by_lua*"
                    .. " or later), not in init_by_lua*"
    end

    local ok, err = load_lib(o.lib)
    if not ok then
        return nil, err
    end

    stop_running()

    cfg = o
    period = math_max(MIN_BEAT, math_min(MAX_BEAT, o.threshold / 10))

    ok, err = c_start(o.threshold * 1e6, o.interval * 1e6, period * 1e6,
                      o.depth, heartbeat)
    if not ok then
        return nil, "stall: " .. err
    end

    gen = gen + 1
    ok, err = timer_at(0, heartbeat, gen)
    if ok and not kicked then
        ok, err = timer_at(EXIT_KICK, exit_kick)
        kicked = ok
    end
    if not ok then
        c_stop()
        return nil, "stall: cannot start the heartbeat timer: " .. err
    end

    running = true
    return true
end


-- stall.stop()   Stops the watchdog and LuaJIT's profiler (the compiled
-- traces are flushed: they recompile without the profiler's checks).
function _M.stop()
    stop_running()
    return true
end


-- stall.recent(n?): the last n stalls of this worker (all kept by
-- default), newest first.
function _M.recent(n)
    local out = {}
    n = n or #kept
    for i = #kept, math_max(1, #kept - n + 1), -1 do
        out[#out + 1] = kept[i]
    end
    return out
end


-- stall.stats(): counters since the last start, and the options in force.
function _M.stats()
    if not C then
        return { running = false }
    end
    C.nbffi_stall_stats(stats_buf)
    local s = stats_buf
    return {
        running = running,
        threshold = cfg and cfg.threshold,
        beat = period,
        beats = tonumber(s.beats),
        stalls = tonumber(s.stalls),
        suspects = tonumber(s.suspects),
        samples = tonumber(s.samples),
        signals = tonumber(s.signals),
        wakes = tonumber(s.wakes),
        spurious = tonumber(s.spurious),
        late = tonumber(s.late),
    }
end


return _M
