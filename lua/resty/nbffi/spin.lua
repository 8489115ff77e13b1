-- resty.nbffi.spin: whether a caller spins for its reply before it yields,
-- and for how long.
--
-- A runtime thread that is spinning answers within a microsecond or two;
-- a yield costs the event loop ~3 us of CPU and the reply ~20 us of
-- latency (the cross-thread wake).  So a caller spins for a budget that
-- follows what successful spins took, times FACTOR; failures halve it,
-- down to none, after which a probe of PROBE_FACTOR times the bound is
-- made every probe_gap calls (the gap doubling while probes fail), so
-- that a runtime that became fast again is noticed.  A probe outlasts a
-- sleeping runtime thread's wake-up (~20 us here), and libnbffi keeps the
-- runtime's threads spinning after they answer a spinning caller: without
-- both, a caller that yields and a runtime that sleeps can keep each other
-- slow for good.  Calls from different light threads less
-- than CONCURRENT_NS apart overlap (many requests at once): those callers
-- yield instead, so that their calls run together rather than one at a
-- time.

local core = require "resty.nbffi.core"

local C = core.C
local now_ns = core.now_ns
local co_running = coroutine.running
local math_floor = math.floor
local math_max = math.max
local math_min = math.min


local FACTOR = 4
local FLOOR = 2000              -- ns, least budget while spins succeed
local PROBE_MIN = 8             -- calls between probes once spins failed
local PROBE_MAX = 1024
local PROBE_FACTOR = 4
local CONCURRENT_NS = 20000


local _M = {}


-- The spin state of one runtime; max_ns is its bound (0: never spin).
function _M.new(max_ns)
    return {
        max = max_ns,
        budget = max_ns,        -- current budget, ns
        avg = 0,                -- ns successful spins took
        probe_gap = PROBE_MIN,
        probe_in = 0,
        last_co = false,        -- light thread of the last call
        last_call = 0,          -- ns it was posted
    }
end


-- true when the previous call came from another light thread less than
-- CONCURRENT_NS before now.
function _M.overlapping(s, now)
    local co = co_running()
    local overlap = co ~= s.last_co and now - s.last_call < CONCURRENT_NS
    s.last_co = co
    s.last_call = now
    return overlap
end


-- Spins on host up to the adaptive budget for task's reply; true if it
-- came (a reap must follow).
function _M.try(s, host, task)
    local budget = s.budget
    if budget == 0 then
        local max = s.max
        if max == 0 then
            return false
        end
        local left = s.probe_in - 1
        if left > 0 then
            s.probe_in = left
            return false
        end
        budget = max * PROBE_FACTOR
    end

    local t0 = now_ns()
    if C.nbffi_host_spin(host, task, budget) ~= 0 then
        local avg = s.avg
        avg = avg + (now_ns() - t0 - avg) * 0.125
        s.avg = avg
        s.budget = math_max(FLOOR, math_min(s.max, FACTOR * avg))
        s.probe_gap = PROBE_MIN
        return true
    end

    if s.budget == 0 then
        s.probe_gap = math_min(s.probe_gap * 2, PROBE_MAX)
        s.probe_in = s.probe_gap
    else
        budget = math_floor(budget / 2)
        if budget < FLOOR then
            budget = 0
            s.probe_in = s.probe_gap
        end
        s.budget = budget
    end
    return false
end


return _M
