-- A fuzzer of the Lua API's arguments, run inside a worker: random types,
-- sizes, NUL bytes, huge method names and payloads for nbffi.load,
-- rt:call, rt:NAME, rt:stats and rt:close, each checked against the class
-- of error the API documents (lua/README.md, "Errors").
--
-- /fuzz?seed=S&n=N: N random operations; the body is one line per class
-- seen, "count<TAB>class", then "MISMATCH<TAB>..." lines for operations
-- whose outcome was not their class's.
local nbffi = require "resty.nbffi"
local ffi = require "ffi"

local ngx = ngx
local concat = table.concat
local random = math.random
local char = string.char
local fmt = string.format
local type = type
local ipairs = ipairs
local pairs = pairs
local tonumber = tonumber
local pcall = pcall
local tostring = tostring

local _M = {}

local MAX_PAYLOAD = 1048576     -- the fuzzed runtime's max_payload
-- the fuzzed runtime: not the one of init_worker, whose options differ
local FUZZ_CFG = os.getenv("NBFFI_FAULT_CFG") .. " "
local NAN = 0 / 0

local fuzz_rt                   -- loaded once per worker


local function bytes(n)
    local t = {}
    for i = 1, n do
        t[i] = char(random(0, 255))
    end
    return concat(t)
end


-- A random string of a random size class; may hold NULs.
local function rand_string()
    local k = random(1, 10)
    if k == 1 then
        return ""
    elseif k <= 5 then
        return bytes(random(1, 40))
    elseif k == 6 then
        return bytes(random(1, 4)) .. "\0" .. bytes(random(0, 4))
    elseif k == 7 then
        return ("m"):rep(random(250, 260))
    elseif k == 8 then
        return ("x"):rep(random(16000, 70000))
    elseif k == 9 then
        return ("y"):rep(MAX_PAYLOAD + random(-1, 1))
    end
    return ("z"):rep(random(1, 5)) .. "\0"
end


local NUMBERS = { 0, -0.0, 1, -1, 0.5, 1e-9, 3, 2^31, 2^32, 2^53, 1e308,
                  math.huge, -math.huge, NAN }

-- A random value of a random Lua type.
local function rand_value()
    local k = random(1, 9)
    if k == 1 then
        return nil
    elseif k == 2 then
        return random(0, 1) == 1
    elseif k == 3 then
        return NUMBERS[random(#NUMBERS)]
    elseif k <= 5 then
        return rand_string()
    elseif k == 6 then
        return {}
    elseif k == 7 then
        return rand_value
    elseif k == 8 then
        return ffi.new("int[1]")
    end
    return coroutine.create(rand_value)
end


-- timeouts and option tables, mostly valid, sometimes not
local function rand_timeout()
    local k = random(1, 6)
    if k == 1 then
        return nil
    elseif k == 2 then
        return random(1, 5)
    elseif k == 3 then
        return { timeout = random(1, 5), spin = random(0, 50) }
    elseif k == 4 then
        return { timeout = rand_value(), spin = rand_value() }
    end
    return rand_value()
end


local function is_num(v)
    return type(v) == "number"
end


local function bad_seconds(v)
    return v <= 0 or v == math.huge or v ~= v
end


-- The class rt:call(method, payload, opts) must end in, and a pattern its
-- outcome must match: "raise:<msg>", "nil:<msg>" or "ok".
local function call_class(method, payload, opts)
    local t = type(opts)
    if opts ~= nil and t ~= "number" and t ~= "table" then
        return "bad opts type", "^raise:.*bad argument #3 to 'call' %(number"
                                .. " or table expected, got " .. t .. "%)$"
    end
    if t == "table" then
        for _, k in ipairs({ "timeout", "spin" }) do
            local v = opts[k]
            if v ~= nil and not is_num(v) then
                return "bad option type", "^raise:.*bad option '" .. k
                       .. "' to 'call' %(number expected, got " .. type(v)
                       .. "%)$"
            end
        end
        if opts.spin and not (opts.spin >= 0 and opts.spin < math.huge) then
            return "bad spin", "^raise:.*bad option 'spin' to 'call'"
        end
    end
    local timeout = t == "number" and opts or t == "table" and opts.timeout
    if timeout and bad_seconds(timeout) then
        return "bad timeout", "^raise:.*bad timeout to 'call' %(positive"
                              .. " number of seconds expected%)$"
    end
    local tiny = timeout and timeout < 0.001
    -- beyond ~292 years the deadline in ns overflows int64
    local huge = timeout and timeout > 1e9
    if type(method) ~= "string" then
        return "method type", "^nil:method must be a string, got "
                              .. type(method) .. "$"
    end
    if type(payload) ~= "string" then
        return "payload type", "^nil:payload must be a string, got "
                               .. type(payload) .. "$"
    end
    if #method == 0 or #method > 255 or method:find("\0", 1, true) then
        return "bad method name", "^nil:invalid method name: must be 1..255"
                                  .. " bytes without NUL$"
    end
    if #payload > MAX_PAYLOAD then
        return "payload too large", "^nil:payload too large: " .. #payload
                                    .. " bytes %(max_payload is "
                                    .. MAX_PAYLOAD .. "%)$"
    end
    if huge then
        return (method == "echo" and "echo" or "unknown method")
               .. ", huge timeout",
               method == "echo" and "^ok$"
               or "^nil:runtime error 2: no such method$"
    end
    -- a deadline a microsecond away may pass before the runtime looks
    if method == "echo" then
        return tiny and "echo, tiny timeout" or "echo",
               tiny and { "^ok$", "^nil:timeout$" } or "^ok$"
    end
    return tiny and "unknown method, tiny timeout" or "unknown method",
           tiny and { "^nil:runtime error 2: no such method$",
                      "^nil:timeout$" }
                or "^nil:runtime error 2: no such method$"
end


local function outcome(ok, a, b)
    if not ok then
        return "raise:" .. tostring(a)
    end
    if a == nil then
        return "nil:" .. tostring(b)
    end
    return "ok", a
end


-- a short description of a value, for mismatch reports
local function describe(v)
    local t = type(v)
    if t == "string" then
        return fmt("%q", #v > 20 and v:sub(1, 20) .. "...(" .. #v .. ")"
                                  or v)
    elseif t == "table" then
        local parts = {}
        for k, x in pairs(v) do
            parts[#parts + 1] = tostring(k) .. "=" .. describe(x)
        end
        return "{" .. concat(parts, ",") .. "}"
    end
    return t == "number" and fmt("%.17g", v) or t
end


local function op_call(rt)
    local method = random(1, 3) == 1 and "echo" or rand_value()
    if type(method) == "string" and method ~= "echo" then
        -- never a real method other than echo: sleep, never, crash
        method = "fz" .. method
    end
    local payload = rand_value()
    local opts = rand_timeout()
    local class, want = call_class(method, payload, opts)
    local o, reply = outcome(pcall(rt.call, rt, method, payload, opts))
    if o == "ok" and reply ~= payload then
        o = "ok but the reply differs"
    end
    return class, want, o, describe(method) .. ", " .. describe(payload)
                           .. ", " .. describe(opts)
end


local function op_sugar(rt)
    -- rt:NAME(payload, opts) is rt:call("NAME", ...)
    local payload = rand_value()
    local class, want = call_class("echo", payload, nil)
    return "sugar " .. class, want,
           (outcome(pcall(rt.echo, rt, payload)))
end


local function op_not_rt(rt)
    local self = rand_value()
    local fn = ({ "call", "close", "stats" })[random(3)]
    return "not a runtime",
           "^raise:.*bad argument #1 to '" .. fn .. "' %(runtime expected;"
           .. " use rt:" .. fn .. "%)$",
           (outcome(pcall(rt[fn], self, "echo", "x")))
end


local function op_stats(rt)
    local ok, s = pcall(rt.stats, rt)
    return "stats", "^ok$",
           (ok and type(s) == "table" and s.posted and "ok") or tostring(s)
end


local function op_load()
    local lib, cfg, opts
    -- never a name the dynamic linker could find: "z" would load libz.so
    local k = random(1, 4)
    if k == 1 then
        lib = rand_value()
        if type(lib) == "string" and lib ~= "" then
            lib = "fz_" .. lib
        end
    elseif k == 2 then
        lib = "/nonexistent/fz" .. rand_string()
    elseif k == 3 then
        lib = "fz_" .. rand_string()
    else
        lib = os.getenv("NBFFI_FAULT_LIB")     -- cached: only opts vary
    end
    cfg = random(1, 4) == 1 and rand_value() or FUZZ_CFG
    if random(1, 2) == 1 then
        opts = random(1, 3) == 1 and rand_value() or {
            max_queue = random(1, 2) == 1 and rand_value() or nil,
            timeout = random(1, 2) == 1 and rand_value() or nil,
            spin = random(1, 2) == 1 and rand_value() or nil,
            global = random(1, 2) == 1 and rand_value() or nil,
            search_path = random(1, 2) == 1 and rand_value() or nil,
        }
    end

    local class, want
    if type(lib) ~= "string" then
        class, want = "load lib type", "^raise:.*bad argument #1 to 'load'"
    elseif cfg ~= nil and type(cfg) ~= "string" then
        class, want = "load cfg type", "^raise:.*bad argument #2 to 'load'"
    elseif opts ~= nil and type(opts) ~= "table" then
        class, want = "load opts type", "^raise:.*bad argument #3 to 'load'"
    elseif opts and (opts.max_queue ~= nil and not is_num(opts.max_queue)
                     or opts.timeout ~= nil and not is_num(opts.timeout)
                     or opts.spin ~= nil and not is_num(opts.spin)
                     or opts.global ~= nil
                        and type(opts.global) ~= "boolean"
                     or opts.search_path ~= nil
                        and type(opts.search_path) ~= "string")
    then
        class, want = "load option type", "^raise:.*bad option '"
    elseif opts and (opts.max_queue and (opts.max_queue < 0
                         or opts.max_queue > 0xffffffff
                         or opts.max_queue ~= math.floor(opts.max_queue))
                     or opts.timeout and bad_seconds(opts.timeout)
                     or opts.spin and not (opts.spin >= 0
                                           and opts.spin < math.huge))
    then
        class, want = "load option value", "^raise:.*bad option '"
    elseif lib == "" then
        class, want = "load empty", "^nil:cannot load runtime library:"
                                    .. " empty name$"
    elseif lib:find("\0", 1, true) then
        -- refused as such, not cut at the NUL and looked up
        class, want = "load NUL in name", "^nil:.*NUL"
    elseif opts and opts.search_path
           and opts.search_path:find("\0", 1, true)
    then
        class, want = "load NUL in search path", "^nil:.*NUL"
    elseif lib == os.getenv("NBFFI_FAULT_LIB") and cfg == FUZZ_CFG then
        class, want = "load cached", "^ok$"
    elseif lib == os.getenv("NBFFI_FAULT_LIB") then
        -- a cfg the runtime may or may not take (each taken one starts a
        -- runtime: rare, random text is seldom a valid cfg)
        class, want = "load other cfg", { "^ok$", "^nil:runtime init"
                                                  .. " failed: .*fault cfg" }
    else
        class, want = "load missing", "^nil:cannot load runtime library: "
    end
    return class, want, (outcome(pcall(nbffi.load, lib, cfg, opts)))
end


-- want: a pattern, or a list of them (any may match)
local function matches(got, want)
    if type(want) == "string" then
        return got:find(want) ~= nil
    end
    for _, w in ipairs(want) do
        if got:find(w) then
            return true
        end
    end
    return false
end


local OPS = { op_call, op_call, op_call, op_call, op_sugar, op_not_rt,
              op_stats, op_load, op_load }


function _M.run()
    local uri_args = ngx.req.get_uri_args()
    math.randomseed(tonumber(uri_args.seed))
    if not fuzz_rt then
        fuzz_rt = assert(nbffi.load(os.getenv("NBFFI_FAULT_LIB"), FUZZ_CFG,
                                    { max_payload = MAX_PAYLOAD }))
    end

    local counts, lines = {}, {}
    for i = 1, tonumber(uri_args.n) do
        local op = OPS[random(#OPS)]
        local class, want, got, args = op(fuzz_rt)
        counts[class] = (counts[class] or 0) + 1
        if not matches(got, want) then
            lines[#lines + 1] = fmt("MISMATCH\t%d\t%s\t%q\t%s", i, class,
                                    got:sub(1, 200), args or "")
        end
    end
    for class, n in pairs(counts) do
        lines[#lines + 1] = n .. "\t" .. class
    end
    table.sort(lines)
    ngx.say(concat(lines, "\n"))
end

return _M
