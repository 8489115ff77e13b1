-- resty.nbffi.meta: the metadata of a call (opts.meta), encoded for
-- libnbffi as "key\0value\0key\0value\0", and its text in log lines.
-- A leaf: no state, nothing of nbffi's own but core's constants.

local core = require "resty.nbffi.core"

local error = error
local pairs = pairs
local tostring = tostring
local type = type
local str_find = string.find
local str_format = string.format
local str_sub = string.sub
local table_concat = table.concat
local table_sort = table.sort

local MAX_META = core.MAX_META


local _M = {}


-- opts.meta (a table of string keys and string or number values) as
-- libnbffi's encoding; nil and an error when it is too large.  Raises on
-- a caller's bug (a bad key or value), at the level of the API function.
function _M.encode(meta, fname, level)
    if type(meta) ~= "table" then
        error(str_format("bad option 'meta' to '%s' (table expected, got"
                         .. " %s)", fname, type(meta)), level)
    end
    local keys, n = {}, 0
    for k, v in pairs(meta) do
        local tv = type(v)
        if type(k) ~= "string" or k == "" or #k > 255
           or str_find(k, "\0", 1, true)
        then
            error(str_format("bad option 'meta' to '%s' (keys must be"
                             .. " strings of 1..255 bytes without NUL)",
                             fname), level)
        end
        if tv ~= "string" and tv ~= "number" then
            error(str_format("bad option 'meta' to '%s' (value of '%s' must"
                             .. " be a string or a number, got %s)", fname,
                             k, tv), level)
        end
        if tv == "string" and str_find(v, "\0", 1, true) then
            error(str_format("bad option 'meta' to '%s' (value of '%s'"
                             .. " contains a NUL byte)", fname, k), level)
        end
        n = n + 1
        keys[n] = k
    end
    if n == 0 then
        return ""
    end
    table_sort(keys)
    local parts = {}
    for i = 1, n do
        local k = keys[i]
        parts[2 * i - 1] = k
        parts[2 * i] = tostring(meta[k])
    end
    local s = table_concat(parts, "\0") .. "\0"
    if #s > MAX_META then
        return nil, "metadata too large: " .. #s .. " bytes (the most is "
                    .. MAX_META .. ")"
    end
    return s
end


-- ", key: value, key: value" for an encoded map (nginx's way of adding
-- context to a line); "" for none.
function _M.text(s)
    if not s or s == "" then
        return ""
    end
    local out, n, pos = {}, 0, 1
    while pos <= #s do
        local kend = str_find(s, "\0", pos, true)
        if not kend then
            break
        end
        local vend = str_find(s, "\0", kend + 1, true) or #s + 1
        n = n + 1
        out[n] = ", " .. str_sub(s, pos, kend - 1) .. ": "
                 .. str_sub(s, kend + 1, vend - 1)
        pos = vend + 1
    end
    return table_concat(out)
end


return _M
