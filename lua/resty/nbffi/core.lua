-- resty.nbffi.core: libnbffi through the LuaJIT FFI -- its declarations,
-- finding the library, checking its ABI version, its constants and error
-- text.  No state.

local ffi = require "ffi"

local error = error
local io_open = io.open
local os_getenv = os.getenv
local pcall = pcall
local str_format = string.format
local tonumber = tonumber
local tostring = tostring
local ffi_string = ffi.string


local ABI = 2                   -- NBFFI_ABI_VERSION this module speaks


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
    uint64_t nbffi_host_peers_refused(nbffi_host_t *host);
    void nbffi_host_kick(nbffi_host_t *host);
    int nbffi_host_reap(nbffi_host_t *host, nbffi_task_t **out, int max);
    int nbffi_host_spin(nbffi_host_t *host, nbffi_task_t *task,
        int64_t spin_ns);
    int nbffi_host_wait(nbffi_host_t *host, int64_t deadline_ns);
    uint64_t nbffi_host_tasks_live(nbffi_host_t *host);
    uint64_t nbffi_host_tasks_allocated(nbffi_host_t *host);
    uint64_t nbffi_host_tasks_freed(nbffi_host_t *host);
    uint64_t nbffi_host_tasks_leaked(nbffi_host_t *host);
    int nbffi_host_log_next(nbffi_host_t *host, int *level, char *buf,
        size_t len, uint64_t *dropped);

    int nbffi_runtime_load(nbffi_host_t *host, const char *lib,
        const char *search_path, const void *cfg, size_t cfg_len,
        uint32_t max_queue, uint64_t max_payload, int64_t start_deadline_ns,
        unsigned flags, nbffi_runtime_t **out, nbffi_task_t **task);
    int nbffi_runtime_state(nbffi_runtime_t *rt);
    int nbffi_runtime_error(nbffi_runtime_t *rt, const char **msg);
    int nbffi_runtime_close(nbffi_runtime_t *rt, int64_t deadline_ns,
        nbffi_task_t **task);
    int nbffi_runtime_wait(nbffi_runtime_t *rt, int64_t deadline_ns);
    void nbffi_runtime_free(nbffi_runtime_t *rt);
    void nbffi_runtime_stats(nbffi_runtime_t *rt, nbffi_stats_t *out);

    void nbffi_runtime_set_spin(nbffi_runtime_t *rt, int64_t max_ns);

    int nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt,
        const char *method, size_t mlen, const void *payload, size_t plen,
        int64_t deadline_ns, unsigned flags, nbffi_task_t **out);
    int nbffi_task_status(nbffi_task_t *task);
    const void *nbffi_task_reply(nbffi_task_t *task, size_t *len);
    int nbffi_task_leaked(nbffi_task_t *task);
    void nbffi_task_release(nbffi_task_t *task);
    uint64_t nbffi_task_id(nbffi_task_t *task);

    int nbffi_preflight(const char *lib, const char *search_path,
        const void *cfg, size_t cfg_len, unsigned flags, const char *user,
        int64_t deadline_ns, char *err, size_t err_len);
    ]]
end

-- Streams, events and metadata (issue 12).
if not pcall(ffi.typeof, "nbffi_event_stats_t") then
    ffi.cdef[[
    typedef struct nbffi_event_s    nbffi_event_t;

    typedef struct {
        uint64_t  emitted;
        uint64_t  delivered;
        uint64_t  dropped;
        uint64_t  queued;
        uint64_t  queued_bytes;
        uint64_t  max_events;
        uint64_t  max_bytes;
    } nbffi_event_stats_t;

    int nbffi_call_ex(nbffi_host_t *host, nbffi_runtime_t *rt,
        const char *method, size_t mlen, const void *payload, size_t plen,
        const void *meta, size_t meta_len, int64_t deadline_ns,
        unsigned flags, uint32_t window, nbffi_task_t **out);
    int nbffi_host_reap_streams(nbffi_host_t *host, nbffi_task_t **out,
        int max);
    int nbffi_task_next_chunk(nbffi_task_t *task, const void **data,
        size_t *len);
    unsigned nbffi_task_chunks(nbffi_task_t *task, unsigned *window);

    void nbffi_host_set_event_limit(nbffi_host_t *host, uint64_t max_events,
        uint64_t max_bytes);
    int nbffi_host_event_next(nbffi_host_t *host, nbffi_event_t **ev);
    const char *nbffi_event_name(nbffi_event_t *ev, size_t *len);
    const void *nbffi_event_data(nbffi_event_t *ev, size_t *len);
    nbffi_runtime_t *nbffi_event_runtime(nbffi_event_t *ev);
    void nbffi_host_event_stats(nbffi_host_t *host,
        nbffi_event_stats_t *out);

    const void *nbffi_host_log_meta(nbffi_host_t *host, size_t *len);
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
                  .. tostring(lib), 4)
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
              .. tostring(lib), 4)
    end
    return lib
end


local C = open_core()

if C.nbffi_abi_version() ~= ABI then
    error(str_format("resty.nbffi: libnbffi ABI version mismatch: need %d,"
                     .. " got %d", ABI, C.nbffi_abi_version()), 3)
end


local _M = {
    C = C,

    -- nbffi.h constants
    NOTIFY_SOCKET = 0x1,
    LOG_QUEUE = 0x2,
    LOAD_GLOBAL = 0x1,
    LOAD_SCHED_NORMAL = 0x2,
    CALL_BORROW = 0x1,
    CALL_STREAM = 0x2,
    MAX_METHOD = 255,
    MAX_META = 4096,
    STREAM_WINDOW = 16,

    EINVAL = -22,
    ENOMEM = -12,
    E2BIG = -7,
    EQFULL = -11,
    ECLOSED = -32,
    ETIMEDOUT = -110,
    ECANCELED = -125,
    EALREADY = -114,
    ELOAD = -4001,
    ESYM = -4002,
    EABI = -4003,
    EINIT = -4004,
    EORPHANED = -4006,

    -- nbffi_rt_state_t
    STATES = {
        [0] = "starting", "ready", "failed", "closing", "closed", "orphaned",
    },
}


function _M.strerror(rc)
    return ffi_string(C.nbffi_strerror(rc))
end


-- CLOCK_MONOTONIC ns as a Lua number (exact to 2^53 ns: 104 days of
-- uptime; coarser after, which deadlines do not mind)
function _M.now_ns()
    return tonumber(C.nbffi_now_ns())
end


return _M
