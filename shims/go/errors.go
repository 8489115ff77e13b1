package nbffi

import (
	"errors"
	"fmt"
)

// Statuses of error replies.  A reply with status 0 is a success; a
// positive status is a runtime error whose reply is the message.
const (
	StatusError         = 1 // a handler returned an error that is not an *Error
	StatusUnknownMethod = 2 // no handler is registered for the method
	StatusPanic         = 3 // the handler panicked; the reply is the panic text
	// StatusTimeout (call.go): the handler returned its ctx's deadline error
)

// MaxMethod is the longest method name nbffi carries, in bytes.
const MaxMethod = 255

// Error is a handler error with its own status, so that callers can tell
// errors apart without parsing text.  Status must be positive.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with status and a formatted message.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// errorStatus is the status an error reply carries: an *Error's own
// (anywhere in the chain) if positive, otherwise StatusError.
func errorStatus(err error) int {
	var e *Error
	if errors.As(err, &e) && e.Status > 0 {
		return e.Status
	}
	return StatusError
}
