package users

import (
	"fmt"
	"net/mail"
	"reflect"
	"time"

	"github.com/millrace/millrace/events"
)

// User is the state of one registered user, stored as JSON: field names and
// tags are a storage format and change only compatibly.
type User struct {
	ID           string    `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	RegisteredAt time.Time `json:"registered_at"`
}

// Decide applies the users rules to cmd (events.RegisterUser, by value or
// pointer) given the current user (nil when none), the command's id and the
// time of the decision.
//
// When the command is accepted it returns a new *User and the events that
// record it. When a rule refuses it, it returns current itself and exactly
// one events.CommandRejected explaining why.
func Decide(current *User, cmd events.Message, commandID string, now time.Time) (*User, []events.Message) {
	now = now.UTC()
	switch c := cmd.(type) {
	case events.RegisterUser:
		return register(current, c, commandID, now)
	case *events.RegisterUser:
		if c != nil {
			return register(current, *c, commandID, now)
		}
	}
	name := fmt.Sprintf("%T", cmd)
	if v := reflect.ValueOf(cmd); v.IsValid() && !(v.Kind() == reflect.Pointer && v.IsNil()) {
		name = cmd.Name()
	}
	return current, []events.Message{events.CommandRejected{
		CommandID:   commandID,
		CommandType: name,
		Code:        events.CodeInvalidCommand,
		Reason:      fmt.Sprintf("the users context does not handle %s commands", name),
		RejectedAt:  now,
	}}
}

func register(current *User, c events.RegisterUser, commandID string, now time.Time) (*User, []events.Message) {
	reject := func(code, format string, args ...any) (*User, []events.Message) {
		return current, []events.Message{events.CommandRejected{
			CommandID:   commandID,
			CommandType: c.Name(),
			AggregateID: c.Key(),
			Code:        code,
			Reason:      fmt.Sprintf(format, args...),
			RejectedAt:  now,
		}}
	}
	switch {
	case c.UserID == "":
		return reject(events.CodeInvalidCommand, "the user id is missing")
	case c.Email == "":
		return reject(events.CodeInvalidCommand, "the email address of user %s is missing", c.UserID)
	case !isAddress(c.Email):
		return reject(events.CodeInvalidCommand, "%q is not an email address such as ada@example.com", c.Email)
	case c.FullName == "":
		return reject(events.CodeInvalidCommand, "the name of user %s is missing", c.UserID)
	case current != nil:
		return reject(events.CodeUserExists, "user %s was already registered at %s", current.ID,
			current.RegisteredAt.UTC().Format(time.RFC3339))
	}
	registered := events.UserRegistered{UserID: c.UserID, Email: c.Email, FullName: c.FullName, RegisteredAt: now}
	return &User{ID: c.UserID, Email: c.Email, Name: c.FullName, RegisteredAt: now}, []events.Message{registered}
}

// isAddress reports whether s is a bare email address, without a display
// name or angle brackets.
func isAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s
}
