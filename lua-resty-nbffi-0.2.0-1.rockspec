-- LuaRocks package of the Lua module and libnbffi (docs/install.md).
--
--   luarocks make lua-resty-nbffi-0.2.0-1.rockspec      (from a clone)
--
-- Needs meson, ninja and a C compiler.  The rock's tree gets
-- resty/nbffi.lua (its Lua dir) and libnbffi.so (its C module dir, one of
-- lua_package_cpath's, where resty.nbffi looks); the whole meson install
-- (header, nbffi.pc, the runtime libraries of the tree) goes to nbffi/ in
-- the rock's own directory (`luarocks show --rock-dir lua-resty-nbffi`),
-- apart from the lib/ and lua/ that LuaRocks deploys into the tree.
rockspec_format = "3.0"
package = "lua-resty-nbffi"
version = "0.2.0-1"

source = {
   url = "git+https://github.com/nbffi/nbffi.git",
   tag = "v0.2.0",
}

description = {
   summary = "Call Go, Python, Java and C runtimes from nginx Lua without "
      .. "blocking the worker",
   detailed = [[
nbffi lets Lua code inside nginx (lua-nginx-module / OpenResty) call
long-lived foreign runtimes that live in their own threads in the same
nginx worker process.  A call posts a message and yields; the worker keeps
serving; the caller resumes with the reply.  Runs on stock nginx with
lua-nginx-module and lua-resty-core: no nginx module, no rebuild.
]],
   license = "Apache-2.0",
   homepage = "https://github.com/nbffi/nbffi",
   labels = { "nginx", "openresty", "ffi", "luajit" },
}

-- LuaJIT (Lua 5.1 ABI); lua-resty-core comes with OpenResty or the
-- distribution's nginx Lua packages.
dependencies = {
   "lua >= 5.1, < 5.2",
}

build = {
   type = "command",
   build_command = [[
rm -rf build-rock &&
meson setup build-rock --prefix="$(PREFIX)/nbffi" --libdir=lib --buildtype=release &&
ninja -C build-rock &&
cp -L build-rock/core/libnbffi.so build-rock/libnbffi.so]],
   install_command = [[meson install -C build-rock --no-rebuild]],
   install = {
      lua = {
         ["resty.nbffi"] = "lua/resty/nbffi.lua",
         ["resty.nbffi.core"] = "lua/resty/nbffi/core.lua",
         ["resty.nbffi.dispatcher"] = "lua/resty/nbffi/dispatcher.lua",
         ["resty.nbffi.spin"] = "lua/resty/nbffi/spin.lua",
         ["resty.nbffi.waiters"] = "lua/resty/nbffi/waiters.lua",
         ["resty.nbffi.events"] = "lua/resty/nbffi/events.lua",
         ["resty.nbffi.meta"] = "lua/resty/nbffi/meta.lua",
         ["resty.nbffi.stream"] = "lua/resty/nbffi/stream.lua",
      },
      lib = {
         -- a copy of the real file (not of the symlink), so that it
         -- keeps its soname, libnbffi.so.0: runtime libraries link to that
         ["libnbffi"] = "build-rock/libnbffi.so",
      },
   },
}
