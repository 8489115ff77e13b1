-- The main demo: one nginx worker hosting the C reference runtime and the
-- three example runtimes (Go gRPC client, Python inference, JVM pool), with
-- a status page.  scripts/demo writes the config and starts everything.
--
-- An example whose runtime fails to load is reported on /status and in the
-- error log; the others keep serving.

local nbffi = require "resty.nbffi"
local cjson = require "cjson.safe"

local ngx = ngx
local getenv = os.getenv
local pcall = pcall
local require = require

local _M = {}

local echo_rt, echo_err
local examples = {}             -- name -> { ok = bool, err = string }


local function start_example(name, module, ...)
    local ok, err = pcall(function(...)
        require(module).init(...)
    end, ...)
    examples[name] = { ok = ok, err = not ok and tostring(err) or nil }
    if not ok then
        ngx.log(ngx.ERR, "demo: example ", name, " failed: ", err)
    end
end


-- init_worker_by_lua*: the dispatcher, then every runtime of the demo.
function _M.init()
    assert(nbffi.init())

    echo_rt, echo_err = nbffi.load("echo", "threads=1",
                                   { search_path = getenv("DEMO_ECHO_DIR") })
    if not echo_rt then
        ngx.log(ngx.ERR, "demo: echo runtime: ", echo_err)
    end

    if getenv("DEMO_GRPC_LIB") then
        start_example("go-grpc", "greeter", getenv("DEMO_GRPC_LIB"),
                      getenv("DEMO_GRPC_ADDR"))
    end
    if getenv("NBFFI_PYTHON_LIB") then
        start_example("python-ml", "ml")
    end
    if getenv("DEMO_JAVA_LIB") then
        start_example("java-pool", "pool", getenv("DEMO_JAVA_LIB"),
                      "class=example.pool.PoolHandler\n"
                      .. "classpath=" .. getenv("DEMO_JAVA_CLASSPATH") .. "\n"
                      .. "arg.upstream=" .. getenv("DEMO_UPSTREAM") .. "\n"
                      .. "arg.connections=4\n")
    end
end


-- content_by_lua*: /echo and /upper through the C runtime; the request
-- body (or ?s=) is the payload.
function _M.c_call(method)
    if not echo_rt then
        ngx.status = 503
        return ngx.say("echo runtime not loaded: ", echo_err)
    end
    ngx.req.read_body()
    local payload = ngx.req.get_body_data() or ngx.var.arg_s or ""
    local reply, err = echo_rt:call(method, payload, 1)
    if not reply then
        ngx.status = 502
        return ngx.say("call failed: ", err)
    end
    ngx.print(reply)
end


-- content_by_lua*: what runs in this worker.
function _M.status()
    local out = {
        pid = ngx.worker.pid(),
        host = nbffi.host_stats(),
        examples = examples,
        echo = echo_rt and echo_rt:stats() or { error = echo_err },
    }
    ngx.header.content_type = "application/json"
    ngx.say(cjson.encode(out))
end


return _M
