-- The Lua half of the python-ml example: loads model.py's Classifier in a
-- Python runtime (one per worker) and serves it.
--
--   lua_shared_dict ml 1m;                      -- the model's version
--   init_worker_by_lua_block { require("ml").init() }   -- trains at start
--   location = /predict { content_by_lua_block { require("ml").predict() } }
--   location = /predict/stream {
--       content_by_lua_block { require("ml").predict_stream() } }
--   location = /reload  { content_by_lua_block { require("ml").reload() } }
--   location = /model   { content_by_lua_block { require("ml").model() } }
--   location = /stats   { content_by_lua_block { require("ml").stats() } }
--
-- /predict/stream relays model.py's predict_stream chunk by chunk (one
-- JSON line per 16 rows, chunked transfer, ngx.flush after each): the
-- first lines reach the client while the rest is computed.  /reload asks
-- the runtime to retrain; the runtime's "model-reloaded" event updates
-- the shared dict "ml" (model_version), which /model reports;
-- /model?wait=N waits (yielding) until the version is at least N.
--
-- Paths default to this repository's layout; the environment overrides
-- them (list each in an nginx "env" directive):
--   NBFFI_PYTHON_LIB  libnbffi_python.so  (<repo>/build/shims/python/...)
--   ML_VENV           the virtualenv with scikit-learn (./.venv)
--   ML_BATCH          "off" serves every call with its own model run

local nbffi = require "resty.nbffi"
local semaphore = require "ngx.semaphore"

local ngx = ngx
local getenv = os.getenv

local _M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local repo = here .. "/../.."


local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end


local function cfg()
    local batch = ""
    if getenv("ML_BATCH") == "off" then
        batch = ', "batch": {"predict": false}'
    end
    return '{"handler": "model:Classifier", "path": ['
           .. json_string(here) .. '], "venv": '
           .. json_string(getenv("ML_VENV") or here .. "/.venv")
           .. batch .. '}'
end


local function runtime()
    local lib = getenv("NBFFI_PYTHON_LIB")
                or repo .. "/build/shims/python/libnbffi_python.so"
    return nbffi.load(lib, cfg(), { max_queue = 4096, timeout = 10,
                                    name = "ml" })
end


-- Requests of this worker waiting in /model?wait=N for a newer version.
local reloaded = semaphore.new()
local waiting = 0


-- The "model-reloaded" event of this worker's runtime: {"version": N,
-- "trained_on": rows}.  Runs in a timer (it may yield).
local function on_reloaded(data)
    local version = tonumber(data:match('"version": *(%d+)'))
    if not version then
        ngx.log(ngx.ERR, "python-ml: bad model-reloaded event: ", data)
        return
    end
    local dict = ngx.shared.ml
    if dict then
        assert(dict:set("model_version", version))
    end
    ngx.log(ngx.NOTICE, "python-ml: model reloaded, version ", version)
    if waiting > 0 then
        reloaded:post(waiting)
    end
end


-- init_worker: start the runtime now; the model trains on its thread while
-- the worker serves, and a request that comes first waits for it (a
-- failed start is logged by nbffi, and every call returns its message).
function _M.init()
    assert(nbffi.init())
    assert(nbffi.on_event("model-reloaded", on_reloaded))
    local rt, err = runtime()
    if not rt then
        ngx.log(ngx.ERR, "python-ml: ", err)
    end
end


local function call(method, payload)
    local rt, err = runtime()
    if not rt then
        ngx.status = 503
        ngx.say(err)
        return
    end
    local reply, status
    reply, err, status = rt:call(method, payload)
    if not reply then
        -- model.py raises nbffi.Error(..., status=400) for bad input
        ngx.status = status == 400 and 400 or 500
        ngx.say(err)
        return
    end
    ngx.header.content_type = "application/json"
    ngx.print(reply)
end


-- The request's body, or nil once it answered 400 (none).
local function instances()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        ngx.status = 400
        ngx.say('POST {"instances": [[64 numbers], ...]}')
    end
    return body
end


function _M.predict()
    local body = instances()
    if not body then
        return
    end
    call("predict", body)
end


-- The request id goes with the call as metadata: the runtime's log lines
-- about this request carry it.
local function meta()
    return { request_id = ngx.var.request_id }
end


function _M.predict_stream()
    local body = instances()
    if not body then
        return
    end
    local rt, err = runtime()
    if not rt then
        ngx.status = 503
        ngx.say(err)
        return
    end
    local started = false
    local it, st = rt:stream("predict_stream", body,
                             { meta = meta(), window = 4 })
    for chunk, serr in it, st do
        if not chunk then
            if not started then
                ngx.status = serr:find("runtime error 400", 1, true)
                             and 400 or 500
                ngx.say(serr)
                return
            end
            -- headers are out: end the body with the error line
            ngx.log(ngx.ERR, "python-ml: stream failed: ", serr)
            ngx.say('{"error": "stream failed"}')
            return
        end
        if not started then
            started = true
            ngx.header.content_type = "application/x-ndjson"
        end
        ngx.print(chunk)
        local ok, ferr = ngx.flush(true)
        if not ok then
            -- the client went away: cancel the stream now (leaving the
            -- loop alone cancels it only when st is collected)
            ngx.log(ngx.INFO, "python-ml: client gone: ", ferr)
            st:close()
            return
        end
    end
end


function _M.reload()
    call("reload", "")
end


function _M.model()
    local dict = ngx.shared.ml
    local want = tonumber(ngx.var.arg_wait)
    local deadline = ngx.now() + 30
    while want and (dict:get("model_version") or 1) < want
          and ngx.now() < deadline
    do
        waiting = waiting + 1
        reloaded:wait(deadline - ngx.now())
        waiting = waiting - 1
    end
    ngx.header.content_type = "application/json"
    ngx.say('{"model_version": ', dict:get("model_version") or 1, '}')
end


function _M.stats()
    call("stats", "")
end


return _M
