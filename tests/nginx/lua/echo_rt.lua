-- Test helper: the C reference runtime ($NBFFI_ECHO_LIB), loaded once per
-- worker and (lib, cfg) by nbffi.load itself.
local nbffi = require "resty.nbffi"

local _M = {}

function _M.rt(cfg, opts)
    return assert(nbffi.load(os.getenv("NBFFI_ECHO_LIB"), cfg or "threads=1",
                             opts))
end

return _M
