// Command lib is the example's nbffi runtime library: a gRPC client of the
// Greeter service that nginx calls through nbffi.  Build it with
//
//	go build -buildmode=c-shared -o libgogrpc.so ./lib
//
// cfg (JSON): {"target": "127.0.0.1:50051"}.  Each runtime loaded with it
// keeps one gRPC ClientConn to target, shared by all its calls.
//
// Methods take and return JSON, the protobuf JSON mapping of greeter.proto:
//
//	SayHello   {"name": "nginx", "delayMs": 0} -> {"message": "Hello, nginx"}
//	SayHellos  {"name": "nginx", "count": 3}   -> {"replies": [{"message": ...}, ...]}
//
// SayHellos is a server-streaming call; the reply gathers the whole stream.
// A gRPC error answers with status 100 + its gRPC code (114 for
// Unavailable, 104 for DeadlineExceeded) and the text "Code: message".
//
// The gRPC deadline is the call's nbffi deadline less a tenth of the time
// left (at most 100 ms), so that a DeadlineExceeded reply reaches the Lua
// caller before the caller's own timeout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "nbffi.dev/examples/go-grpc/greeter"
	nbffi "nbffi.dev/shims/go"
)

const (
	// StatusGRPC plus a gRPC code is the status of a gRPC error reply.
	StatusGRPC = 100

	maxMargin = 100 * time.Millisecond
)

type config struct {
	Target string `json:"target"`
}

// client is the state of one runtime.
type client struct {
	conn    *grpc.ClientConn
	greeter pb.GreeterClient
}

func (c *client) Close() error { return c.conn.Close() }

func open(_ context.Context, cfg []byte) (any, error) {
	var c config
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, fmt.Errorf("cfg: %v", err)
	}
	if c.Target == "" {
		return nil, errors.New(`cfg: "target" is missing`)
	}
	conn, err := grpc.NewClient(c.Target,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, greeter: pb.NewGreeterClient(conn)}, nil
}

// request decodes a call's JSON payload.
func request(payload []byte) (*pb.HelloRequest, error) {
	req := &pb.HelloRequest{}
	if err := protojson.Unmarshal(payload, req); err != nil {
		return nil, nbffi.Errorf(nbffi.StatusError, "bad request: %v", err)
	}
	return req, nil
}

// grpcContext is ctx with the gRPC deadline.
func grpcContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	margin := min(time.Until(d)/10, maxMargin)
	return context.WithDeadline(ctx, d.Add(-margin))
}

// grpcError turns a gRPC error into an error reply with its code.
func grpcError(err error) error {
	s := status.Convert(err)
	return nbffi.Errorf(StatusGRPC+int(s.Code()), "%s: %s", s.Code(), s.Message())
}

func sayHello(ctx context.Context, payload []byte) ([]byte, error) {
	req, err := request(payload)
	if err != nil {
		return nil, err
	}
	c := nbffi.State(ctx).(*client)
	ctx, cancel := grpcContext(ctx)
	defer cancel()
	reply, err := c.greeter.SayHello(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return protojson.Marshal(reply)
}

func sayHellos(ctx context.Context, payload []byte) ([]byte, error) {
	req, err := request(payload)
	if err != nil {
		return nil, err
	}
	c := nbffi.State(ctx).(*client)
	ctx, cancel := grpcContext(ctx)
	defer cancel()
	stream, err := c.greeter.SayHellos(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}

	var b bytes.Buffer
	b.WriteString(`{"replies":[`)
	for n := 0; ; n++ {
		reply, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, grpcError(err)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		m, err := protojson.Marshal(reply)
		if err != nil {
			return nil, err
		}
		b.Write(m)
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

func init() {
	nbffi.OnInit(open)
	nbffi.Handle("SayHello", sayHello)
	nbffi.Handle("SayHellos", sayHellos)
}

func main() {}
