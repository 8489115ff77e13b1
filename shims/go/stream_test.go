package nbffi_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	nbffi "nbffi.dev/shims/go"
	"nbffi.dev/shims/go/nbffitest"
)

// What the stream handlers saw.
var (
	sendErrs = make(chan error, 16)
	streamed = make(chan int, 16) // chunks sent before the handler ended
)

func init() {
	nbffi.HandleStream("count", func(ctx context.Context, p []byte,
		send func([]byte) error) ([]byte, error) {
		// sends chunks "1".."n", then replies "done n"
		n, _ := strconv.Atoi(string(p))
		for i := 1; i <= n; i++ {
			if err := send([]byte(strconv.Itoa(i))); err != nil {
				return nil, err
			}
		}
		return []byte(fmt.Sprintf("done %d", n)), nil
	})
	nbffi.HandleStream("endless", func(ctx context.Context, p []byte,
		send func([]byte) error) ([]byte, error) {
		// sends until the caller stops reading
		started <- string(p)
		for i := 0; ; i++ {
			if err := send([]byte(strconv.Itoa(i))); err != nil {
				sendErrs <- err
				streamed <- i
				return nil, err
			}
		}
	})
	nbffi.Handle("streaming", func(ctx context.Context, p []byte) ([]byte, error) {
		// a plain handler: Send tells a plain call from a stream
		err := nbffi.Send(ctx, p)
		return []byte(fmt.Sprintf("%v %v", nbffi.Streaming(ctx), err)), nil
	})
	nbffi.Handle("meta", func(ctx context.Context, p []byte) ([]byte, error) {
		m := nbffi.Meta(ctx)
		keys := make([]string, 0, len(m))
		for k, v := range m {
			keys = append(keys, k+"="+v)
		}
		id, ok := nbffi.MetaValue(ctx, "request_id")
		nbffi.Logf(ctx, nbffi.LevelNotice, "meta handler (%s %v)", id, ok)
		return []byte(strings.Join(sortStrings(keys), ",")), nil
	})
	nbffi.Handle("emit", func(ctx context.Context, p []byte) ([]byte, error) {
		// emits n events "tick" from a goroutine of the handler
		n, _ := strconv.Atoi(string(p))
		errs := make(chan error, 1)
		go func() {
			var err error
			for i := 0; i < n && err == nil; i++ {
				err = nbffi.Emit(ctx, "tick", []byte(strconv.Itoa(i)))
			}
			errs <- err
		}()
		if err := <-errs; err != nil {
			return nil, err
		}
		return nil, nil
	})
	nbffi.Handle("flood", func(ctx context.Context, p []byte) ([]byte, error) {
		// emits n events and counts the dropped ones
		n, _ := strconv.Atoi(string(p))
		dropped := 0
		for i := 0; i < n; i++ {
			err := nbffi.Emit(ctx, "flood", []byte("0123456789"))
			if errors.Is(err, nbffi.ErrDropped) {
				dropped++
			} else if err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(dropped)), nil
	})
}

var emitEnd = make(chan error, 1)

// emitUntilClosed emits "beat" events from the init hook's ctx, ignoring
// that ctx, until Emit refuses: the runtime is gone.
func emitUntilClosed(ctx context.Context) {
	for {
		err := nbffi.Emit(ctx, "beat", nil)
		if err != nil && !errors.Is(err, nbffi.ErrDropped) {
			emitEnd <- err
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// stream calls method as a stream and reads it to its end.
func (e *env) stream(method string, p []byte, o nbffitest.CallOpts) (
	[]string, int, string) {
	e.t.Helper()
	o.Stream = true
	task, err := e.h.CallEx(e.rt, method, p, o)
	if err != nil {
		e.t.Fatal(err)
	}
	defer e.h.Release(task)
	var chunks []string
	for {
		b, ok := e.h.WaitChunk(task, 10*time.Second)
		if !ok {
			break
		}
		chunks = append(chunks, string(b))
	}
	if !e.h.Done(task) {
		e.t.Fatalf("%s: no end within 10 s", method)
	}
	status, reply := task.Result()
	return chunks, status, string(reply)
}

func TestStream(t *testing.T) {
	e := newEnv(t, "stream")
	for _, n := range []int{0, 1, 3, 100} {
		chunks, status, reply := e.stream("count", []byte(strconv.Itoa(n)),
			nbffitest.CallOpts{Window: 4})
		if status != 0 || reply != fmt.Sprintf("done %d", n) ||
			len(chunks) != n {
			t.Fatalf("count %d: %d %q, %d chunks", n, status, reply,
				len(chunks))
		}
		for i, c := range chunks {
			if c != strconv.Itoa(i+1) {
				t.Fatalf("count %d: chunk %d is %q", n, i, c)
			}
		}
	}
}

func TestStreamPlainCall(t *testing.T) {
	e := newEnv(t, "plain")
	if _, reply := e.do("streaming", []byte("x"), 0); string(reply) !=
		"false "+nbffi.ErrNotStream.Error() {
		t.Errorf("plain call: %q", reply)
	}
	_, _, reply := e.stream("streaming", []byte("x"), nbffitest.CallOpts{})
	if reply != "true <nil>" {
		t.Errorf("stream: %q", reply)
	}
}

func TestStreamSlowReaderIsBounded(t *testing.T) {
	// The window is 2: the handler sends 2 chunks and waits; each chunk
	// read lets one more through.  Nothing is ever more than 2 ahead.
	e := newEnv(t, "slow")
	task, err := e.h.CallEx(e.rt, "count", []byte("50"),
		nbffitest.CallOpts{Stream: true, Window: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.h.Release(task)
	for i := 1; i <= 50; i++ {
		if n := task.Chunks(); n > 2 {
			t.Fatalf("%d chunks in flight, window 2", n)
		}
		b, ok := e.h.WaitChunk(task, 10*time.Second)
		if !ok || string(b) != strconv.Itoa(i) {
			t.Fatalf("chunk %d: %q %v", i, b, ok)
		}
	}
	if _, ok := e.h.WaitChunk(task, 10*time.Second); ok || !e.h.Done(task) {
		t.Fatal("no end after 50 chunks")
	}
	if status, reply := task.Result(); status != 0 || string(reply) != "done 50" {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestStreamCallerStopsReading(t *testing.T) {
	// The caller reads 3 chunks and releases the task: the handler's send
	// returns context.Canceled, its ctx is cancelled, its answer dropped.
	e := newEnv(t, "stop")
	task, err := e.h.CallEx(e.rt, "endless", []byte("s"),
		nbffitest.CallOpts{Stream: true, Window: 4})
	if err != nil {
		t.Fatal(err)
	}
	within(t, started, "start")
	for i := 0; i < 3; i++ {
		if _, ok := e.h.WaitChunk(task, 10*time.Second); !ok {
			t.Fatalf("chunk %d missing", i)
		}
	}
	e.h.Release(task)
	if err := within(t, sendErrs, "send error"); !errors.Is(err, context.Canceled) {
		t.Errorf("send returned %v", err)
	}
	// at most the 3 read and a window more were sent
	if n := within(t, streamed, "count"); n > 3+4 {
		t.Errorf("%d chunks sent", n)
	}
}

func TestStreamCallerTimesOut(t *testing.T) {
	// Nobody reads: the window fills and the send waits until the
	// deadline, then returns context.DeadlineExceeded.
	e := newEnv(t, "timeout")
	task, err := e.h.CallEx(e.rt, "endless", []byte("t"),
		nbffitest.CallOpts{Stream: true, Window: 2,
			Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.h.Release(task)
	within(t, started, "start")
	if err := within(t, sendErrs, "send error"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("send returned %v", err)
	}
	if n := within(t, streamed, "count"); n != 2 {
		t.Errorf("%d chunks sent into a window of 2", n)
	}
	if err := e.h.Wait(task, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if status, reply := task.Result(); status != nbffi.StatusTimeout || string(reply) != "timeout" {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestStreamsConcurrent(t *testing.T) {
	e := newEnv(t, "many")
	const n = 200
	tasks := make([]*nbffitest.Task, n)
	for i := range tasks {
		var err error
		tasks[i], err = e.h.CallEx(e.rt, "count", []byte("20"),
			nbffitest.CallOpts{Stream: true, Window: 2})
		if err != nil {
			t.Fatal(err)
		}
	}
	got := make([]int, n)
	for left := n; left > 0; {
		e.h.Reap(10 * time.Millisecond)
		left = 0
		for i, task := range tasks {
			for {
				if _, ok := task.NextChunk(); !ok {
					break
				}
				got[i]++
			}
			if !e.h.Done(task) || task.Chunks() > 0 {
				left++
			}
		}
	}
	for i, task := range tasks {
		if status, reply := task.Result(); status != 0 || string(reply) != "done 20" || got[i] != 20 {
			t.Errorf("stream %d: %d %q, %d chunks", i, status, reply, got[i])
		}
		e.h.Release(task)
	}
}

func TestMeta(t *testing.T) {
	e := newEnv(t, "meta")
	task, err := e.h.CallEx(e.rt, "meta", nil, nbffitest.CallOpts{
		Meta: map[string]string{"request_id": "r-42", "tenant": "a", "empty": ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.h.Release(task)
	if err := e.h.Wait(task, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if status, reply := task.Result(); status != 0 || string(reply) != "empty=,request_id=r-42,tenant=a" {
		t.Errorf("got %d %q", status, reply)
	}
	found := false
	for _, l := range e.h.LogLines() {
		if strings.Contains(l.Text, "meta handler (r-42 true)") {
			found = true
			if !strings.Contains(string(l.Meta), "request_id\x00r-42\x00") {
				t.Errorf("log line without the request id: %q", l.Meta)
			}
		}
	}
	if !found {
		t.Error("no log line of the handler")
	}
	// no metadata: an empty map, no value
	if _, reply := e.do("meta", nil, 0); string(reply) != "" {
		t.Errorf("without metadata: %q", reply)
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t, "events")
	if status, reply := e.do("emit", []byte("100"), 0); status != 0 {
		t.Fatalf("emit: %d %q", status, reply)
	}
	evs := e.h.WaitEvents(100, 10*time.Second)
	if len(evs) != 100 {
		t.Fatalf("%d events", len(evs))
	}
	for i, ev := range evs {
		if ev.Name != "tick" || string(ev.Data) != strconv.Itoa(i) {
			t.Fatalf("event %d: %q %q", i, ev.Name, ev.Data)
		}
	}
}

func TestEventFloodIsCounted(t *testing.T) {
	e := newEnv(t, "flood")
	e.h.SetEventLimit(10, 0)
	status, reply := e.do("flood", []byte("100"), 0)
	if status != 0 || string(reply) != "90" {
		t.Fatalf("flood: %d %q", status, reply)
	}
	if evs := e.h.Events(); len(evs) != 10 {
		t.Errorf("%d events delivered", len(evs))
	}
	if emitted, _, dropped := e.h.EventStats(); emitted != 10 || dropped != 90 {
		t.Errorf("emitted %d, dropped %d", emitted, dropped)
	}
}

func TestEmitAfterCloseIsRefused(t *testing.T) {
	// A goroutine of the init hook that outlives the runtime gets
	// ErrClosed from Emit, and never touches the freed queue.
	e := newEnv(t, "")
	rt := e.load("emitter")
	if evs := e.h.WaitEvents(1, 10*time.Second); len(evs) == 0 ||
		evs[0].Name != "beat" {
		t.Fatalf("events: %v", evs)
	}
	if status, msg, err := rt.Close(10 * time.Second); err != nil || status != 0 {
		t.Fatalf("close: %d %q %v", status, msg, err)
	}
	e.expectClosed(rt)
	if err := within(t, emitEnd, "the emitter's end"); !errors.Is(err, nbffi.ErrClosed) {
		t.Errorf("Emit after close: %v", err)
	}
	rt.Free()
	e.h.Events()
}
