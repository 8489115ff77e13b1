-- resty.nbffi.metrics: Prometheus metrics of the runtimes of all workers.
--
-- A call costs its worker a clock read, a bucket search and a few table
-- increments (observe); nothing is shared on the hot path.  Once a
-- second each worker flushes to the lua_shared_dict "nbffi_metrics": the
-- deltas of its counters (libnbffi's per-runtime counters, and the Lua
-- ones of observe) with dict:incr, and its gauges as keys of its own that
-- expire unless refreshed (a worker that died leaves no stale values).
-- text() renders the dict in the Prometheus text format, summing gauges
-- over workers.  No metrics without the dict: observe is then never
-- called (enabled() is false).
--
-- Dict keys, fields separated by a tab:
--   c  family  labels              a counter
--   h  family  labels  i | "sum"   a histogram: cumulative bucket i, sum
--   g  family  labels  pid         a gauge, this worker's part

local core = require "resty.nbffi.core"

local ngx = ngx
local ngx_log = ngx.log
local ngx_shared = ngx.shared
local ngx_worker_pid = ngx.worker.pid
local ERR = ngx.ERR

local now_ns = core.now_ns
local pairs = pairs
local tonumber = tonumber
local table_concat = table.concat
local table_sort = table.sort
local str_format = string.format
local str_gsub = string.gsub
local str_match = string.match


local DICT = "nbffi_metrics"
local FLUSH = 1                 -- s between flushes
local GAUGE_TTL = 3 * FLUSH     -- s a gauge outlives its worker's flushes
local MAX_METHODS = 100         -- per runtime; more share method="_other"

-- Latency buckets: upper bounds, as Prometheus shows them and in ns.
local LE = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
}
local NB = #LE
local LE_NS = {}
for i = 1, NB do
    LE_NS[i] = tonumber(LE[i]) * 1e9
end

-- libnbffi's counters (rt:stats() fields) and their families.
local STAT_COUNTERS = {
    { "posted", "nbffi_calls_posted_total" },
    { "completed", "nbffi_calls_completed_total" },
    { "failed", "nbffi_calls_failed_total" },
    { "timed_out", "nbffi_calls_timed_out_total" },
    { "abandoned", "nbffi_calls_abandoned_total" },
    { "refused", "nbffi_calls_refused_total" },
}

-- Every family: name, type, help, in the order text() shows them.
local FAMILIES = {
    { "nbffi_calls_posted_total", "counter",
      "Calls accepted into a runtime's queue." },
    { "nbffi_calls_completed_total", "counter",
      "Calls answered with a reply (status 0)." },
    { "nbffi_calls_failed_total", "counter",
      "Calls answered with a runtime error, or closed." },
    { "nbffi_calls_timed_out_total", "counter",
      "Calls whose deadline passed." },
    { "nbffi_calls_abandoned_total", "counter",
      "Calls given up by their caller before their deadline." },
    { "nbffi_calls_refused_total", "counter",
      "Calls refused because the runtime's queue was full." },
    { "nbffi_method_calls_total", "counter",
      "Calls posted, per method." },
    { "nbffi_method_errors_total", "counter",
      "Calls posted that returned an error, per method." },
    { "nbffi_call_duration_seconds", "histogram",
      "Time from a call's post to its return to Lua." },
    { "nbffi_calls_in_flight", "gauge",
      "Calls posted and not yet reaped or given up." },
    { "nbffi_queue_depth", "gauge",
      "Calls waiting in a runtime's request queue." },
    { "nbffi_runtime_workers", "gauge",
      "Workers where the runtime is in the given state." },
}


local _M = { DICT = DICT, FLUSH = FLUSH, LE = LE }

local dict_full_logged = false
local gauges_set = {}           -- this worker's gauge keys in the dict


-- The Prometheus label value of s: backslash, quote and newline escaped.
local function label_value(s)
    return (str_gsub(s, '[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"',
                                     ["\n"] = "\\n" }))
end


function _M.enabled()
    return ngx_shared[DICT] ~= nil
end


-- A runtime's per-worker metrics record.
function _M.new(name)
    local hist = {}
    for i = 1, NB + 1 do
        hist[i] = 0
    end
    return {
        labels = 'runtime="' .. label_value(name) .. '"',
        hist = hist,            -- calls per bucket since the last flush
        sum = 0,                -- their ns
        methods = {},           -- method -> { calls, errors }
        nmethods = 0,
        last = {},              -- libnbffi's counters at the last flush
        seeded = false,         -- flushed once: every counter is there
    }
end


local function method_counts(m, method)
    local c
    if m.nmethods < MAX_METHODS then
        m.nmethods = m.nmethods + 1
        c = { 0, 0, m.labels .. ',method="' .. label_value(method) .. '"' }
    else
        c = m.methods["\0other"]
        if not c then
            c = { 0, 0, m.labels .. ',method="_other"' }
            m.methods["\0other"] = c
        end
    end
    m.methods[method] = c
    return c
end


-- A posted call returned after (now - t0) ns; ok: with a reply.
function _M.observe(m, method, t0, ok)
    local dt = now_ns() - t0
    local b = 1
    while b <= NB and dt > LE_NS[b] do
        b = b + 1
    end
    local hist = m.hist
    hist[b] = hist[b] + 1
    m.sum = m.sum + dt
    local c = m.methods[method] or method_counts(m, method)
    c[1] = c[1] + 1
    if not ok then
        c[2] = c[2] + 1
    end
end


-- Adds delta to key; seed: create key with 0 too (a counter is shown at
-- 0 from the runtime's first flush on, so that rate() sees it start).
local function incr(dict, key, delta, seed)
    if delta == 0 and not seed then
        return
    end
    local _, err = dict:incr(key, delta, 0)
    if err and not dict_full_logged then
        dict_full_logged = true
        ngx_log(ERR, "nbffi: metrics: lua_shared_dict ", DICT, ": ", err,
                "; metrics are incomplete (make it larger)")
    end
end


-- Adds what m counted since the last flush to the dict; stats: the
-- runtime's libnbffi counters now (rt:stats()).
local function flush_counters(dict, m, stats)
    local last = m.last
    local seed = not m.seeded
    m.seeded = true
    for i = 1, #STAT_COUNTERS do
        local field, family = STAT_COUNTERS[i][1], STAT_COUNTERS[i][2]
        local v = stats[field]
        incr(dict, "c\t" .. family .. "\t" .. m.labels,
             v - (last[field] or 0), seed)
        last[field] = v
    end

    local hist = m.hist
    local below = 0
    local key = "h\tnbffi_call_duration_seconds\t" .. m.labels .. "\t"
    for i = 1, NB + 1 do
        below = below + hist[i]
        hist[i] = 0
        incr(dict, key .. i, below, seed)
    end
    incr(dict, key .. "sum", m.sum * 1e-9, seed)
    m.sum = 0

    for _, c in pairs(m.methods) do
        if c[1] > 0 then
            incr(dict, "c\tnbffi_method_calls_total\t" .. c[3], c[1])
            incr(dict, "c\tnbffi_method_errors_total\t" .. c[3], c[2])
            c[1], c[2] = 0, 0
        end
    end
end


-- One flush of this worker: rts is a list of { m, stats, state } for its
-- runtimes (several may share a name: their gauges add up).  final: the
-- worker exits; its gauges go.
function _M.flush(rts, final)
    local dict = ngx_shared[DICT]
    if not dict then
        return
    end
    local gauges = {}
    for i = 1, #rts do
        local r = rts[i]
        local m, stats = r[1], r[2]
        if stats then
            flush_counters(dict, m, stats)
            local labels = m.labels
            local k = "nbffi_calls_in_flight\t" .. labels
            gauges[k] = (gauges[k] or 0) + stats.in_flight
            k = "nbffi_queue_depth\t" .. labels
            gauges[k] = (gauges[k] or 0) + stats.queued
        end
        if r[3] then
            local k = "nbffi_runtime_workers\t" .. m.labels .. ',state="'
                      .. r[3] .. '"'
            gauges[k] = 1       -- this worker counts once per state
        end
    end
    -- a gauge this worker no longer has (a runtime closed, a state
    -- left) goes at once, not when it expires
    local pid = "\t" .. ngx_worker_pid()
    for k in pairs(gauges_set) do
        if final or not gauges[k] then
            gauges_set[k] = nil
            dict:delete("g\t" .. k .. pid)
        end
    end
    if final then
        return
    end
    for k, v in pairs(gauges) do
        local ok, err = dict:set("g\t" .. k .. pid, v, GAUGE_TTL)
        if ok then
            gauges_set[k] = true
        elseif not dict_full_logged then
            dict_full_logged = true
            ngx_log(ERR, "nbffi: metrics: lua_shared_dict ", DICT, ": ", err,
                    "; metrics are incomplete (make it larger)")
        end
    end
end


local function format_value(v)
    if v == tonumber(str_format("%d", v)) then
        return str_format("%d", v)
    end
    return str_format("%.15g", v)
end


-- The dict's metrics in the Prometheus text format (version 0.0.4), or
-- nil and an error.
function _M.text()
    local dict = ngx_shared[DICT]
    if not dict then
        return nil, "no lua_shared_dict " .. DICT .. " in nginx.conf"
    end
    -- family -> labels -> value (a histogram: labels -> { [i|sum] = v })
    local fams = {}
    local keys = dict:get_keys(0)
    for i = 1, #keys do
        local key = keys[i]
        local v = dict:get(key)
        local kind, family, labels, extra =
            str_match(key, "^(%a)\t([^\t]+)\t([^\t]*)\t?(.*)$")
        if v and kind then
            local f = fams[family]
            if not f then
                f = {}
                fams[family] = f
            end
            if kind == "h" then
                local h = f[labels]
                if not h then
                    h = {}
                    f[labels] = h
                end
                h[tonumber(extra) or extra] = v
            else
                f[labels] = (f[labels] or 0) + v
            end
        end
    end

    local out = {}
    for i = 1, #FAMILIES do
        local name, typ, help = FAMILIES[i][1], FAMILIES[i][2], FAMILIES[i][3]
        local f = fams[name]
        if f then
            out[#out + 1] = "# HELP " .. name .. " " .. help
            out[#out + 1] = "# TYPE " .. name .. " " .. typ
            local sets = {}
            for labels in pairs(f) do
                sets[#sets + 1] = labels
            end
            table_sort(sets)
            for j = 1, #sets do
                local labels = sets[j]
                local v = f[labels]
                if typ == "histogram" then
                    for b = 1, NB do
                        out[#out + 1] = name .. "_bucket{" .. labels
                                        .. ',le="' .. LE[b] .. '"} '
                                        .. format_value(v[b] or 0)
                    end
                    local count = format_value(v[NB + 1] or 0)
                    out[#out + 1] = name .. "_bucket{" .. labels
                                    .. ',le="+Inf"} ' .. count
                    out[#out + 1] = name .. "_sum{" .. labels .. "} "
                                    .. format_value(v.sum or 0)
                    out[#out + 1] = name .. "_count{" .. labels .. "} "
                                    .. count
                else
                    out[#out + 1] = name .. "{" .. labels .. "} "
                                    .. format_value(v)
                end
            end
        end
    end
    out[#out + 1] = ""
    return table_concat(out, "\n")
end



return _M
