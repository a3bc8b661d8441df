package router

import (
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
)

// recoverer turns a panic in the handler into a *PanicError holding the
// panic value and the stack. A PanicError is permanent: the message is
// poisoned at once, with both in the reason, and the process carries on.
func (s *Stack) recoverer(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if v := recover(); v != nil {
				out, err = nil, &PanicError{Value: v, Stack: string(debug.Stack())}
			}
		}()
		return h(msg)
	}
}
