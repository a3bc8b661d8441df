package router

import (
	"errors"
	"fmt"
)

// Permanent marks err as a failure that retrying cannot fix: the stack
// poisons the message at once instead of retrying it. It returns nil for a
// nil err. The result wraps err, so errors.Is and errors.As still see it.
//
//	if err := json.Unmarshal(msg.Payload, &v); err != nil {
//		return router.Permanent(fmt.Errorf("decode %s: %w", msg.UUID, err))
//	}
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

// IsPermanent reports whether err, or an error it wraps, has a method
// Permanent() bool that returns true, as the errors of Permanent and a
// recovered panic do. A package can mark its own error types permanent by
// giving them that method, without importing this one.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// PanicError is the error a handler's panic becomes. It is permanent: the
// message is poisoned at once, with the panic value and the stack in the
// poison reason.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
}

func (e *PanicError) Error() string   { return fmt.Sprintf("handler panicked: %v", e.Value) }
func (e *PanicError) Permanent() bool { return true }

// RetriesExhaustedError is returned when a message still fails after the
// retry rules allowed their last attempt. It wraps the last failure.
type RetriesExhaustedError struct {
	// Attempts is how many times the handler tried the message.
	Attempts int
	// Limit says which rule ended the retries: "max_attempts" or "max_elapsed".
	Limit string
	// Err is the last failure.
	Err error
}

func (e *RetriesExhaustedError) Error() string {
	return fmt.Sprintf("gave up after %d attempts (retry.%s reached): %v", e.Attempts, e.Limit, e.Err)
}

func (e *RetriesExhaustedError) Unwrap() error { return e.Err }
