// Package greeter is the generated code of greeter.proto.
//
// Regenerate with protoc, protoc-gen-go and protoc-gen-go-grpc on PATH:
//
//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative greeter.proto
package greeter
