-- Every language's fault runtime in one worker, for tests/reliability/
-- test_mixed.py: $NBFFI_MIXED_ORDER names the languages in load order
-- ("java go python c"); each one's library and cfg are
-- $NBFFI_MIXED_<LANG>_LIB and $NBFFI_MIXED_<LANG>_CFG.
local nbffi = require "resty.nbffi"

local ngx = ngx
local tonumber = tonumber

local _M = {}

local rts = {}                  -- lang -> runtime of this worker
local payloads = {}             -- size -> string of that many bytes


-- init_worker: load them all, in order, as an application would.
function _M.init_worker()
    assert(nbffi.init())
    for lang in os.getenv("NBFFI_MIXED_ORDER"):gmatch("%S+") do
        local var = "NBFFI_MIXED_" .. lang:upper()
        rts[lang] = assert(nbffi.load(os.getenv(var .. "_LIB"),
                                      os.getenv(var .. "_CFG")))
    end
end


-- /mixed?lang=LANG&n=SIZE: 200 and the echo of SIZE bytes, or 502 and why
-- (logged).  A call may wait for its runtime's start (a JVM's, in a storm).
function _M.call()
    local args = ngx.req.get_uri_args()
    local rt = rts[args.lang]
    if not rt then
        ngx.status = 404
        return ngx.say("no runtime for ", args.lang)
    end
    local n = tonumber(args.n) or 16
    local p = payloads[n]
    if not p then
        p = ("0123456789abcdef"):rep(math.ceil(n / 16)):sub(1, n)
        payloads[n] = p
    end
    local reply, err = rt:call("echo", p, 10)   -- as the clients wait
    if reply ~= p then
        err = err or "wrong reply"
        ngx.log(ngx.WARN, "mixed_rt: ", args.lang, ": ", err)
        ngx.status = 502
        return ngx.say(err)
    end
    ngx.print(reply)
end

return _M
