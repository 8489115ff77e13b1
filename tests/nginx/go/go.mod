module nbffi.dev/tests/nginx/go

go 1.24

require nbffi.dev/shims/go v0.0.0

replace nbffi.dev/shims/go => ../../../shims/go
