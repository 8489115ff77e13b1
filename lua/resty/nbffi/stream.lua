-- resty.nbffi.stream: rt:stream(method, payload, opts), a call whose
-- runtime answers in chunks before its final status.
--
--     for chunk, err in rt:stream("chunks", "3 4096") do
--         if not chunk then ... err ... end
--         ngx.print(chunk)
--     end
--
-- The iterator returns each chunk as it comes, waiting (yielding) when
-- none is there; then the final reply as a last chunk if it is not empty;
-- then nil (the loop ends).  A failure (runtime error, timeout, closed)
-- comes as false, err, after the chunks that came before it.
--
-- A stream is a waiter record (resty.nbffi.waiters) with stream = true:
-- the dispatcher posts its semaphore when chunks come (reap_streams) and
-- when it completes (deliver, which leaves the task to the reader).  The
-- record stays in the waiters' table until the reader is done, so that
-- the sweep finds a reader that is gone.  The reader's object holds a
-- finalizer: a loop left with break (or a reader that is collected) gives
-- the stream up, which cancels it in the runtime; st:close() does it at
-- once.

local ffi = require "ffi"
local core = require "resty.nbffi.core"
local waiters = require "resty.nbffi.waiters"
local dispatcher = require "resty.nbffi.dispatcher"
local encode_meta = require("resty.nbffi.meta").encode

local ngx = ngx
local get_phase = ngx.get_phase

local C = core.C
local now_ns = core.now_ns
local strerror = core.strerror
local ffi_new = ffi.new
local ffi_gc = ffi.gc
local ffi_string = ffi.string
local error = error
local math_floor = math.floor
local math_huge = math.huge
local setmetatable = setmetatable
local str_find = string.find
local tonumber = tonumber
local type = type

local ETIMEDOUT = core.ETIMEDOUT
local ECLOSED = core.ECLOSED
local ECANCELED = core.ECANCELED
local MAX_DEADLINE = 2 ^ 62
local MAX_WINDOW = 65536
-- ns the reader spins for the first chunk before it yields: a runtime
-- thread that is spinning on its queue sends it within a few us, which
-- saves the wake-up of the dispatcher and a resume (~50-100 us)
local FIRST_SPIN = 20000

local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
    preread = true,
}


local _M = {}
local stream_mt = {}
local methods = {}
stream_mt.__index = methods

local task_out = ffi_new("nbffi_task_t *[1]")
local data_out = ffi_new("const void *[1]")
local len_out = ffi_new("size_t[1]")


-- The end of a stream: its record leaves the waiters' table and its task
-- is released (cancelled, if it had not completed).
local function finish(st)
    local rec = st.rec
    if st.ended then
        return
    end
    st.ended = true
    if not rec.released then
        waiters.give_up(st.id, rec)
    end
end


local function final_error(rec)
    if rec.err then
        return rec.err
    end
    local status = rec.status
    if status > 0 then
        return "runtime error " .. status .. ": " .. (rec.reply or "")
    end
    if status == ETIMEDOUT then
        return "timeout"
    end
    if status == ECLOSED then
        return "closed"
    end
    if status == ECANCELED then
        return "cancelled"
    end
    local msg = strerror(status)
    if rec.reply and rec.reply ~= "" then
        msg = msg .. ": " .. rec.reply
    end
    return msg
end


-- The iterator: for chunk, err in iter, st.
local function iter(st)
    if st.ended then
        if st.last then
            local last = st.last
            st.last = nil
            return last
        end
        return nil
    end

    local rec = st.rec
    local poll = dispatcher.POLL
    while true do
        if rec.gone then
            finish(st)
            return false, st.err or "timeout"
        end

        local rc = C.nbffi_task_next_chunk(rec.task, data_out, len_out)
        if rc == 1 then
            st.spin = 0
            return ffi_string(data_out[0], len_out[0])
        end

        if rec.done then
            -- every chunk sent before the answer has been read
            finish(st)
            if rec.err or rec.status ~= 0 then
                return false, final_error(rec)
            end
            if rec.reply and rec.reply ~= "" then
                return rec.reply
            end
            return nil
        end

        local ready = false
        local spin = st.spin
        if spin > 0 then
            st.spin = 0
            local task = rec.task
            local stop = now_ns() + spin
            repeat
                ready = C.nbffi_task_chunks(task, nil) > 0
            until ready or now_ns() >= stop
        end

        if not ready then
            local err
            poll, err = dispatcher.wait_once(rec, poll)
            if not poll then
                if not rec.done then
                    st.err = err and ("cannot wait for the stream: " .. err)
                             or "timeout"
                    finish(st)
                    return false, st.err
                end
                poll = dispatcher.POLL
            end
        end
    end
end


-- Gives the stream up now (a loop left early): the runtime sees it
-- cancelled.  Returns true.
function methods.close(st)
    finish(st)
    return true
end


-- Chunks waiting to be read, and the window.
function methods.pending(st)
    if st.ended then
        return 0, st.window
    end
    return tonumber(C.nbffi_task_chunks(st.rec.task, nil)), st.window
end


local function check_opts(rt, opts)
    local timeout, window, meta, spin = rt._timeout, 0, nil, FIRST_SPIN
    if opts == nil then
        return timeout, window, meta, spin
    end
    local t = type(opts)
    if t == "number" then
        timeout = opts
    elseif t == "table" then
        local v = opts.timeout
        if v ~= nil then
            if type(v) ~= "number" then
                error("bad option 'timeout' to 'stream' (number expected,"
                      .. " got " .. type(v) .. ")", 4)
            end
            timeout = v
        end
        v = opts.window
        if v ~= nil then
            if type(v) ~= "number" or v < 1 or v > MAX_WINDOW
               or v ~= math_floor(v)
            then
                error("bad option 'window' to 'stream' (integer 1.."
                      .. MAX_WINDOW .. " expected)", 4)
            end
            window = v
        end
        if opts.meta ~= nil then
            meta = opts.meta
        end
        v = opts.spin
        if v ~= nil then
            if type(v) ~= "number" or not (v >= 0 and v < math_huge) then
                error("bad option 'spin' to 'stream' (microseconds >= 0"
                      .. " expected)", 4)
            end
            spin = math_floor(v * 1000)
        end
    else
        error("bad argument #3 to 'stream' (number or table expected, got "
              .. t .. ")", 4)
    end
    if not (timeout > 0 and timeout < math_huge) then    -- NaN too
        error("bad timeout to 'stream' (positive number of seconds"
              .. " expected)", 4)
    end
    return timeout, window, meta, spin
end


-- One-shot iterator for a stream that could not start: false, err once.
local function failed(err)
    local st = { ended = true, last = false }
    return function(s)
        if s.last == false then
            s.last = nil
            return false, err
        end
        return nil
    end, st
end


-- rt:stream(method, payload, opts): see the top of this file.  call_error
-- turns a refused post's code into the message rt:call gives.
function _M.open(rt, method, payload, opts, call_error)
    local timeout, window, meta, spin = check_opts(rt, opts)
    local meta_s = ""
    if meta ~= nil then
        local err
        meta_s, err = encode_meta(meta, "stream", 4)
        if not meta_s then
            return failed(err)
        end
    end

    if type(method) ~= "string" then
        return failed("method must be a string, got " .. type(method))
    end
    if type(payload) ~= "string" then
        return failed("payload must be a string, got " .. type(payload))
    end

    local phase = get_phase()
    if not YIELDABLE[phase] then
        return failed("cannot call a runtime in the " .. phase .. " phase:"
                      .. " it cannot yield (call from rewrite, access,"
                      .. " content or an ngx.timer)")
    end

    local host = dispatcher.current()
    if rt._closed or not host then
        return failed("closed")
    end

    local mlen = #method
    if mlen == 0 or mlen > core.MAX_METHOD
       or str_find(method, "\0", 1, true)
    then
        return failed("invalid method name: must be 1.." .. core.MAX_METHOD
                      .. " bytes without NUL")
    end

    local plen = #payload
    local deadline = now_ns() + timeout * 1e9
    local rc = C.nbffi_call_ex(host, rt._ptr, method, mlen, payload, plen,
                               meta_s, #meta_s,
                               deadline < MAX_DEADLINE and deadline or 0,
                               core.CALL_STREAM, window, task_out)
    if rc < 0 then
        return failed(call_error(rt, rc, plen))
    end

    local task = task_out[0]
    local id = tonumber(C.nbffi_task_id(task))
    local rec = {
        task = task,
        deadline = deadline,
        stream = true,
    }
    waiters.add(id, rec)

    local st = setmetatable({
        id = id,
        rec = rec,
        window = window > 0 and window or core.STREAM_WINDOW,
        ended = false,
        spin = spin,            -- ns for the first chunk, then 0
        last = nil,
        err = nil,
        -- the finalizer must not reach st: it holds only rec and id
        anchor = ffi_gc(ffi_new("char[1]"), function()
            if not rec.released and dispatcher.current() then
                waiters.give_up(id, rec)
            end
        end),
    }, stream_mt)

    return iter, st
end


return _M
