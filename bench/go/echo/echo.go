// Package echo is the handler that the benchmark runs both ways: inside
// nginx through nbffi (../lib) and in a sidecar process (../sidecar).
package echo

import "context"

// Echo replies with the payload.
func Echo(_ context.Context, payload []byte) ([]byte, error) {
	return payload, nil
}
