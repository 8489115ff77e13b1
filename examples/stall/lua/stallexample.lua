-- The stall example: two jobs that block an nginx worker when Lua does
-- them, and the same jobs in an nbffi runtime (work_rt.c).
--   md5:   random strings and MD5 in a loop (about a second of CPU)
--   fetch: a blocking socket connect and receive from a slow server

local ffi = require "ffi"
local nbffi = require "resty.nbffi"

local ngx = ngx
local ngx_md5 = ngx.md5
local str_char = string.char
local table_concat = table.concat
local random = math.random

local C = ffi.C

-- Declared once; another module may have declared some already.
for _, decl in ipairs({
    "int socket(int domain, int type, int protocol);",
    "int connect(int fd, const void *addr, unsigned int len);",
    "long recv(int fd, void *buf, size_t len, int flags);",
    "int close(int fd);",
    "uint16_t htons(uint16_t v);",
    "typedef struct { uint16_t family; uint16_t port; uint8_t addr[4];"
        .. " char zero[8]; } stallexample_sockaddr_in;",
}) do
    pcall(ffi.cdef, decl)
end

local AF_INET, SOCK_STREAM = 2, 1

local _M = {}

-- Iterations of the md5 job: about 1 s of CPU here (./run calibrate).
_M.MD5_N = tonumber(os.getenv("STALL_EXAMPLE_MD5_N")) or 350000


local function random_string(n)
    local t = {}
    for i = 1, n do
        t[i] = str_char(random(97, 122))
    end
    return table_concat(t)
end


-- In Lua: the worker computes, nothing else runs meanwhile.
function _M.md5(n)
    local digest
    for _ = 1, n do
        digest = ngx_md5(random_string(64))
    end
    return digest
end


-- In Lua: a blocking socket (not a cosocket): the worker sleeps in
-- connect() and recv() until the slow server answers.
function _M.fetch(host, port)
    local fd = C.socket(AF_INET, SOCK_STREAM, 0)
    if fd < 0 then
        return nil, "socket() failed"
    end
    local sa = ffi.new("stallexample_sockaddr_in[1]")
    sa[0].family = AF_INET
    sa[0].port = C.htons(port)
    local i = 0
    for byte in host:gmatch("%d+") do
        sa[0].addr[i] = tonumber(byte)
        i = i + 1
    end
    if C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
        C.close(fd)
        return nil, "connect() failed"
    end
    local buf = ffi.new("char[4096]")
    local n = C.recv(fd, buf, 4096, 0)
    C.close(fd)
    if n < 0 then
        return nil, "recv() failed"
    end
    return ffi.string(buf, n)
end


-- The same jobs in the runtime: the worker posts them and serves others.
local rt

local function runtime()
    if not rt then
        rt = assert(nbffi.load(os.getenv("STALL_EXAMPLE_RT"), ""))
    end
    return rt
end


function _M.rt_md5(n)
    return runtime():call("md5", tostring(n), 60)
end


function _M.rt_fetch(host, port)
    return runtime():call("fetch", host .. ":" .. port, 60)
end


-- The locations.
function _M.serve(job)
    local host, port = "127.0.0.1", tonumber(os.getenv("STALL_EXAMPLE_SLOW"))
    local res, err
    if job == "md5" then
        res, err = _M.md5(_M.MD5_N)
    elseif job == "fetch" then
        res, err = _M.fetch(host, port)
    elseif job == "rt/md5" then
        res, err = _M.rt_md5(_M.MD5_N)
    elseif job == "rt/fetch" then
        res, err = _M.rt_fetch(host, port)
    end
    if not res then
        ngx.status = 502
        return ngx.say("failed: ", err)
    end
    ngx.say(res)
end


function _M.stalls()
    local cjson = require "cjson.safe"
    local stall = require "resty.nbffi.stall"
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode({ pid = ngx.worker.pid(), stats = stall.stats(),
                           stalls = stall.recent() }))
end

return _M
