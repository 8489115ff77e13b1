package nbffi

import (
	"context"
	"time"
)

// HandlersGone waits up to timeout for the handlers of ctx's runtime (a
// handler's ctx), once it was closed, to have returned and answered.
func HandlersGone(ctx context.Context, timeout time.Duration) bool {
	f := &ctx.Value(runtimeKey{}).(*runtime).calls
	if !f.waiting.Load() {
		return false // not closed: f.idle is not there yet
	}
	end := time.After(timeout)
	for f.n.Load() != 0 {
		select {
		case <-f.idle:
		case <-end:
			return false
		}
	}
	return true
}
