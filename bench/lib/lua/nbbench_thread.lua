-- The functions nbbench's { pool = ..., module = "nbbench_thread" } vias
-- run through ngx.run_worker_thread, in the worker thread's own Lua VM
-- (which has few ngx APIs: no cosockets, no semaphores, hence its own
-- module).

local _M = {}

function _M.md5(payload)
    return ngx.md5(payload)
end

return _M
