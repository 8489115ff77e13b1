module nbffi.dev/shims/go

go 1.24
