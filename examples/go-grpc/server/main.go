// Command greeter-server is the demo gRPC server of the example: it serves
// Greeter on a loopback address and prints "listening on ADDR" once ready.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "nbffi.dev/examples/go-grpc/greeter"
)

// Longest SayHellos stream the server sends.
const maxCount = 1000

type server struct {
	pb.UnimplementedGreeterServer
	greeting string
}

// wait sleeps for the request's delay_ms, or until the call ends.
func wait(ctx context.Context, req *pb.HelloRequest) error {
	if req.DelayMs <= 0 {
		return nil
	}
	select {
	case <-time.After(time.Duration(req.DelayMs) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// echoRequestID sends the caller's x-request-id back in the response
// header, so that the caller can see its request id went through.
func echoRequestID(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get("x-request-id"); len(ids) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("x-request-id", ids[0]))
	}
}

func checkName(req *pb.HelloRequest) error {
	if req.Name == "" {
		return status.Error(codes.InvalidArgument, "name is empty")
	}
	return nil
}

func (s server) SayHello(ctx context.Context, req *pb.HelloRequest) (*pb.HelloReply, error) {
	echoRequestID(ctx)
	if err := checkName(req); err != nil {
		return nil, err
	}
	if err := wait(ctx, req); err != nil {
		return nil, err
	}
	return &pb.HelloReply{Message: s.greeting + ", " + req.Name}, nil
}

func (s server) SayHellos(req *pb.HelloRequest, stream pb.Greeter_SayHellosServer) error {
	echoRequestID(stream.Context())
	if err := checkName(req); err != nil {
		return err
	}
	if req.Count < 0 || req.Count > maxCount {
		return status.Errorf(codes.InvalidArgument, "count must be 0..%d", maxCount)
	}
	for i := int32(1); i <= req.Count; i++ {
		if err := wait(stream.Context(), req); err != nil {
			return err
		}
		msg := fmt.Sprintf("%s #%d, %s", s.greeting, i, req.Name)
		if err := stream.Send(&pb.HelloReply{Message: msg}); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "listen address (port 0: any free port)")
	greeting := flag.String("greeting", "Hello", "first word of the replies")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterGreeterServer(s, server{greeting: *greeting})

	fmt.Fprintf(os.Stdout, "listening on %s\n", ln.Addr())
	if err := s.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
