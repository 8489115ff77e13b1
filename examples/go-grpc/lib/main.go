// Command lib is the example's nbffi runtime library: a gRPC client of the
// Greeter service that nginx calls through nbffi.  Build it with
//
//	go build -buildmode=c-shared -o libgogrpc.so ./lib
//
// cfg (JSON): {"target": "127.0.0.1:50051", "watch": {"name": "w",
// "delayMs": 100}}.  Each runtime loaded with it keeps one gRPC ClientConn
// to target, shared by all its calls.  With "watch", the runtime also
// watches a server stream from its start to its close (SayHellos stands
// in for an etcd or config-service watch) and emits each message as an
// event "greeting" (its JSON), which Lua handlers of the worker receive.
//
// Methods take and return JSON, the protobuf JSON mapping of greeter.proto:
//
//	SayHello   {"name": "nginx", "delayMs": 0} -> {"message": "Hello, nginx"}
//	SayHellos  {"name": "nginx", "count": 3}   -> {"replies": [{"message": ...}, ...]}
//
// SayHellos is a server-streaming call.  Called as a stream (rt:stream in
// Lua), it relays each message as it arrives, one chunk each (its JSON and
// a newline), and ends with an empty reply; called plainly (rt:call), the
// reply gathers the whole stream.  A gRPC error answers with status 100 +
// its gRPC code (114 for Unavailable, 104 for DeadlineExceeded) and the
// text "Code: message".
//
// The call's metadata key "request_id" (opts.meta in Lua) goes to the
// server as the gRPC metadata "x-request-id"; the log lines of the call
// carry it, and SayHello logs the id the server sent back.
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
	"google.golang.org/grpc/metadata"
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
	Watch  *watch `json:"watch"`
}

// watch is what the runtime watches: SayHellos with this name.
type watch struct {
	Name    string `json:"name"`
	DelayMs int32  `json:"delayMs"`
}

// client is the state of one runtime.
type client struct {
	conn     *grpc.ClientConn
	greeter  pb.GreeterClient
	watching chan struct{} // closed when the watch has stopped
}

func (c *client) Close() error {
	err := c.conn.Close()
	if c.watching != nil {
		<-c.watching
	}
	return err
}

func open(ctx context.Context, cfg []byte) (any, error) {
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
	cl := &client{conn: conn, greeter: pb.NewGreeterClient(conn)}
	if c.Watch != nil {
		cl.watching = make(chan struct{})
		go cl.watch(ctx, c.Watch)
	}
	return cl, nil
}

// watch emits each message of the watched stream as an event "greeting",
// subscribing again when the stream ends or fails, until ctx (the
// runtime's) is done.
func (c *client) watch(ctx context.Context, w *watch) {
	defer close(c.watching)
	req := &pb.HelloRequest{Name: w.Name, DelayMs: w.DelayMs, Count: 1000}
	for ctx.Err() == nil {
		stream, err := c.greeter.SayHellos(ctx, req)
		for err == nil {
			var reply *pb.HelloReply
			if reply, err = stream.Recv(); err == nil {
				var m []byte
				if m, err = protojson.Marshal(reply); err == nil {
					err = nbffi.Emit(ctx, "greeting", m)
				}
			}
		}
		if ctx.Err() != nil || errors.Is(err, nbffi.ErrClosed) {
			return
		}
		if !errors.Is(err, io.EOF) {
			nbffi.Logf(ctx, nbffi.LevelWarn, "watch %q: %v", w.Name, err)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
}

// request decodes a call's JSON payload.
func request(payload []byte) (*pb.HelloRequest, error) {
	req := &pb.HelloRequest{}
	if err := protojson.Unmarshal(payload, req); err != nil {
		return nil, nbffi.Errorf(nbffi.StatusError, "bad request: %v", err)
	}
	return req, nil
}

// grpcContext is ctx with the gRPC deadline, and the request id of the
// call's metadata as the gRPC metadata "x-request-id".
func grpcContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if id, ok := nbffi.MetaValue(ctx, "request_id"); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
	}
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
	nbffi.Logf(ctx, nbffi.LevelInfo, "SayHello %q", req.Name)
	gctx, cancel := grpcContext(ctx)
	defer cancel()
	var header metadata.MD
	reply, err := c.greeter.SayHello(gctx, req, grpc.Header(&header))
	if ids := header.Get("x-request-id"); len(ids) > 0 {
		nbffi.Logf(ctx, nbffi.LevelInfo, "SayHello %q: the server saw "+
			"request id %s", req.Name, ids[0])
	}
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
	nbffi.Logf(ctx, nbffi.LevelInfo, "SayHellos %q count %d", req.Name,
		req.Count)
	if nbffi.Streaming(ctx) {
		return relay(ctx, c, req)
	}
	gctx, cancel := grpcContext(ctx)
	defer cancel()
	stream, err := c.greeter.SayHellos(gctx, req)
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

// relay sends each message of the SayHellos stream as a chunk as soon as
// it arrives.  The gRPC stream has the caller's own deadline (no margin):
// at the deadline the handler returns ctx.Err(), which the caller sees as
// its timeout.  A caller that stops reading cancels ctx, and with it the
// gRPC stream.
func relay(ctx context.Context, c *client, req *pb.HelloRequest) (
	[]byte, error) {

	gctx := ctx
	if id, ok := nbffi.MetaValue(ctx, "request_id"); ok {
		gctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
	}
	stream, err := c.greeter.SayHellos(gctx, req)
	for err == nil {
		var reply *pb.HelloReply
		if reply, err = stream.Recv(); err != nil {
			break
		}
		var m []byte
		if m, err = protojson.Marshal(reply); err == nil {
			err = nbffi.Send(ctx, append(m, '\n'))
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		return nil, nil // the stream's end: no last chunk
	case errors.Is(ctx.Err(), context.Canceled):
		nbffi.Logf(ctx, nbffi.LevelInfo, "SayHellos %q: the caller is "+
			"gone", req.Name)
		return nil, ctx.Err()
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	if _, ok := status.FromError(err); ok {
		return nil, grpcError(err)
	}
	return nil, err
}

func init() {
	nbffi.OnInit(open)
	nbffi.Handle("SayHello", sayHello)
	nbffi.Handle("SayHellos", sayHellos)
}

func main() {}
