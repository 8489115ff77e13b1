-- The Lua half of the python-ml example: loads model.py's Classifier in a
-- Python runtime (one per worker) and serves it.
--
--   init_worker_by_lua_block { require("ml").init() }   -- trains at start
--   location = /predict { content_by_lua_block { require("ml").predict() } }
--   location = /stats   { content_by_lua_block { require("ml").stats() } }
--
-- Paths default to this repository's layout; the environment overrides
-- them (list each in an nginx "env" directive):
--   NBFFI_PYTHON_LIB  libnbffi_python.so  (<repo>/build/shims/python/...)
--   ML_VENV           the virtualenv with scikit-learn (./.venv)
--   ML_BATCH          "off" serves every call with its own model run

local nbffi = require "resty.nbffi"

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


-- init_worker: start the runtime now; the model trains on its thread while
-- the worker serves, and a request that comes first waits for it (a
-- failed start is logged by nbffi, and every call returns its message).
function _M.init()
    assert(nbffi.init())
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


function _M.predict()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        ngx.status = 400
        ngx.say('POST {"instances": [[64 numbers], ...]}')
        return
    end
    call("predict", body)
end


function _M.stats()
    call("stats", "")
end


return _M
