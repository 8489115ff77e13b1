-- wrk script of the soak: each request asks /soak for another payload
-- size, from a few bytes to lent (>= 16 KiB) and large payloads.
local sizes = { 16, 200, 600, 1500, 4096, 16384, 20000, 65536, 262144 }
local i = 0

request = function()
    i = i % #sizes + 1
    return wrk.format("GET", "/soak?n=" .. sizes[i])
end
