# Test::Nginx example: a Lua location that calls nbffi's C echo runtime.
# From a clone built with `meson setup build && ninja -C build`:
#
#   TEST_NGINX_NBFFI=$PWD prove -r t/
#
# (Debian's nginx also needs TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/\
# modules/ndk_http_module.so /usr/lib/nginx/modules/ngx_http_lua_module.so").
# Test::Nginx puts the values of $TEST_NGINX_* variables into the blocks.
# tests/docs/test_t_example.py runs these same blocks in the project's own
# harness (Test::Nginx is not packaged for Debian 12).
use Test::Nginx::Socket::Lua;

repeat_each(2);
plan tests => repeat_each() * (3 * blocks());
no_long_string();
run_tests();

__DATA__

=== TEST 1: a call returns the runtime's reply
--- main_config
env NBFFI_LIB=$TEST_NGINX_NBFFI/build/core/libnbffi.so;
--- http_config
lua_package_path "$TEST_NGINX_NBFFI/lua/?.lua;;";
init_worker_by_lua_block {
    assert(require("resty.nbffi").init())
}
--- config
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt, err = nbffi.load("echo", "threads=2",
            { search_path = "$TEST_NGINX_NBFFI/build/shims/c" })
        if not rt then
            ngx.log(ngx.ERR, "load: ", err)
            return ngx.exit(500)
        end
        ngx.say(rt:call("upper", ngx.var.arg_s, 1))
    }
}
--- request
GET /t?s=hello
--- response_body
HELLO
--- no_error_log
[error]



=== TEST 2: a runtime error is nil, the text and the status
--- main_config
env NBFFI_LIB=$TEST_NGINX_NBFFI/build/core/libnbffi.so;
--- http_config
lua_package_path "$TEST_NGINX_NBFFI/lua/?.lua;;";
--- config
location = /t {
    content_by_lua_block {
        local nbffi = require "resty.nbffi"
        local rt = assert(nbffi.load("echo", "threads=2",
            { search_path = "$TEST_NGINX_NBFFI/build/shims/c" }))
        ngx.say(rt:call("no_such_method", "x", 1))
    }
}
--- request
GET /t
--- response_body
nilruntime error 2: unknown method2
--- no_error_log
[alert]
