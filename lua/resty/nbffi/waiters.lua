-- resty.nbffi.waiters: waiter records.  A record is the interest in one
-- task, from its post until its completion is reaped: the waiting
-- caller's semaphore, a payload lent to the runtime, and then the result.
-- Records are kept in a table keyed by task id, so no C code ever holds a
-- pointer to a Lua object.
--
-- A record:
--   task      the nbffi_task_t *, until released
--   deadline  ns (nbffi_now_ns clock) after which nobody waits
--   payload   a string lent to the runtime (NBFFI_CALL_BORROW): pinned
--   sema      the semaphore its waiters wait on, while they do
--   nwait     how many wait on it (a load may have several)
--   gone      nobody waits any more: drop the result
--   stream    a stream (resty.nbffi.stream): the record stays until its
--             reader is done
--   posted    a stream's semaphore was posted and its reader has not
--             resumed yet
--   done      the result is in: status, reply; or err, when the reply
--             could not be delivered
--   on_done   called with the record once the result is in (life-cycle
--             tasks: the runtime object follows its state)

local core = require "resty.nbffi.core"
local semaphore = require "ngx.semaphore"

local C = core.C
local pairs = pairs
local sema_new = semaphore.new


local TICK = 1                  -- s between sweeps
local SEMA_POOL_MAX = 1024


local _M = {}

local records = {}              -- task id -> record
local nrecords = 0
local sema_pool = {}
local nsema_pool = 0
local next_sweep = 0


function _M.add(id, rec)
    records[id] = rec
    nrecords = nrecords + 1
end


-- Removes and returns the record of id, or nil.
function _M.take(id)
    local rec = records[id]
    if rec then
        records[id] = nil
        nrecords = nrecords - 1
    end
    return rec
end


-- The record of id, left in place, or nil.
function _M.get(id)
    return records[id]
end


function _M.count()
    return nrecords
end


-- A semaphore for a waiter, from the pool when one is there.
function _M.sema()
    if nsema_pool > 0 then
        local sema = sema_pool[nsema_pool]
        sema_pool[nsema_pool] = nil
        nsema_pool = nsema_pool - 1
        return sema
    end
    return sema_new(0)
end


-- Gives a semaphore back: only one whose wait got its post (count 0);
-- after a timeout a post may still come.
function _M.sema_put(sema)
    if nsema_pool < SEMA_POOL_MAX then
        nsema_pool = nsema_pool + 1
        sema_pool[nsema_pool] = sema
    end
end


-- The caller no longer waits for rec (timeout, or killed): give the task
-- up.  A lent payload must outlive the runtime's use of it, so such a task
-- stays unreleased, with its record, until its completion is reaped.
function _M.give_up(id, rec)
    rec.gone = true
    if rec.stream and records[id] == rec then
        -- a stream's payload is copied; releasing cancels it, and a task
        -- already reaped is freed
        records[id] = nil
        nrecords = nrecords - 1
        rec.released = true
        C.nbffi_task_release(rec.task)
        return
    end
    if not rec.payload and records[id] == rec then
        records[id] = nil
        nrecords = nrecords - 1
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
    if rec.posted then
        -- a stream's reader was posted and has not resumed yet: the
        -- semaphore's count is 0 until it does, which is no sign of a
        -- killed reader
        return false
    end
    local sema = rec.sema
    return sema ~= nil and sema:count() >= 0
end


-- Gives up the tasks of abandoned call records, at most once per TICK.
-- Life-cycle records are never given up: their tasks always complete.
function _M.sweep(now)
    if now < next_sweep then
        return
    end
    next_sweep = now + TICK * 1e9
    for id, rec in pairs(records) do
        if not rec.gone and not rec.on_done and abandoned(rec, now) then
            _M.give_up(id, rec)
        end
    end
end


-- Gives up every stream still open (the final shutdown: their readers
-- are gone).
function _M.give_up_streams()
    for id, rec in pairs(records) do
        if rec.stream then
            _M.give_up(id, rec)
        end
    end
end


-- Wakes every sleeping waiter, so that they switch to reaping by
-- themselves while no dispatcher runs.
function _M.wake_all()
    for _, rec in pairs(records) do
        local sema = rec.sema
        if sema and not rec.gone then
            rec.sema = nil      -- posted: no longer a sign of a waiter
            sema:post(rec.nwait or 1)
        end
    end
end


return _M
