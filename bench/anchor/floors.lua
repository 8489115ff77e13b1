-- Locations for bench/anchor/run that yield without any bridge: what a
-- request pays for leaving the event loop and coming back, the floor under
-- every nonblocking call.
--
--   /yield  ngx.sleep(0), then the 512 B reply.  Stock lua-nginx-module
--           (no OpenResty delayed-events patch) makes that a 0 ms timer:
--           the request resumes later in the same event-loop iteration.
--   /sema   the request waits on a semaphore of its own, which a light
--           thread in a timer posts (resty.nbffi's dispatcher does the
--           same for every reply): a semaphore round trip through another
--           light thread, without any call.

local semaphore = require "ngx.semaphore"

local PAYLOAD = string.rep("p", 512)

local _M = {}

local pending = {}              -- semaphores to post
local npending = 0
local poster = semaphore.new(0) -- wakes the posting light thread
local poster_woken = false
local started = false


local function post_all(premature)
    if premature then
        return
    end
    while not ngx.worker.exiting() do
        poster:wait(1)
        poster_woken = false
        for i = 1, npending do
            pending[i]:post(1)
            pending[i] = nil
        end
        npending = 0
    end
end


function _M.yield()
    ngx.sleep(0)
    ngx.say(PAYLOAD)
end


function _M.sema()
    if not started then
        started = assert(ngx.timer.at(0, post_all))
    end
    local s = semaphore.new(0)
    npending = npending + 1
    pending[npending] = s
    if not poster_woken then
        poster_woken = true
        poster:post(1)
    end
    local ok, err = s:wait(10)
    if not ok then
        ngx.status = 502
        return ngx.say("sema: ", err)
    end
    ngx.say(PAYLOAD)
end


return _M
