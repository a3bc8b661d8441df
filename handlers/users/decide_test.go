package users_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/users"
)

const commandID = "cmd-1"

var (
	registeredAt = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	now          = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

func register() events.RegisterUser {
	return events.RegisterUser{UserID: "u-1", Email: "ada@example.com", FullName: "Ada Lovelace"}
}

func TestDecideAccepts(t *testing.T) {
	cases := []struct {
		name string
		cmd  events.Message
	}{
		{"register a new user", register()},
		{"register by pointer, as the cqrs handler receives it", func() events.Message { c := register(); return &c }()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next, emitted := users.Decide(nil, tc.cmd, commandID, now)
			want := &users.User{ID: "u-1", Email: "ada@example.com", Name: "Ada Lovelace", RegisteredAt: now}
			if !reflect.DeepEqual(next, want) {
				t.Errorf("next user %+v, want %+v", next, want)
			}
			event := events.UserRegistered{UserID: "u-1", Email: "ada@example.com", FullName: "Ada Lovelace", RegisteredAt: now}
			if len(emitted) != 1 || !reflect.DeepEqual(emitted[0], event) {
				t.Errorf("events %+v, want [%+v]", emitted, event)
			}
		})
	}
}

func TestDecideRejects(t *testing.T) {
	existing := &users.User{ID: "u-1", Email: "ada@example.com", Name: "Ada Lovelace", RegisteredAt: registeredAt}
	with := func(change func(*events.RegisterUser)) events.RegisterUser {
		c := register()
		change(&c)
		return c
	}
	cases := []struct {
		name    string
		current *users.User
		cmd     events.RegisterUser
		code    string
		reason  string
	}{
		{
			name: "missing id", cmd: with(func(c *events.RegisterUser) { c.UserID = "" }),
			code: events.CodeInvalidCommand, reason: "the user id is missing",
		},
		{
			name: "missing email", cmd: with(func(c *events.RegisterUser) { c.Email = "" }),
			code: events.CodeInvalidCommand, reason: "the email address of user u-1 is missing",
		},
		{
			name: "malformed email", cmd: with(func(c *events.RegisterUser) { c.Email = "ada at example.com" }),
			code: events.CodeInvalidCommand, reason: `"ada at example.com" is not an email address such as ada@example.com`,
		},
		{
			name: "email with a display name", cmd: with(func(c *events.RegisterUser) { c.Email = "Ada <ada@example.com>" }),
			code: events.CodeInvalidCommand, reason: `"Ada <ada@example.com>" is not an email address such as ada@example.com`,
		},
		{
			name: "missing name", cmd: with(func(c *events.RegisterUser) { c.FullName = "" }),
			code: events.CodeInvalidCommand, reason: "the name of user u-1 is missing",
		},
		{
			name: "id already registered", current: existing, cmd: with(func(c *events.RegisterUser) { c.Email = "other@example.com" }),
			code: events.CodeUserExists, reason: "user u-1 was already registered at 2026-11-20T09:00:00Z",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before users.User
			if tc.current != nil {
				before = *tc.current
			}
			next, emitted := users.Decide(tc.current, tc.cmd, commandID, now)
			if next != tc.current {
				t.Errorf("a rejection returned user %+v, want the current user itself", next)
			}
			if tc.current != nil && *tc.current != before {
				t.Errorf("a rejection changed the current user to %+v", *tc.current)
			}
			want := events.CommandRejected{
				CommandID: commandID, CommandType: "users.register-user.v1", AggregateID: tc.cmd.UserID,
				Code: tc.code, Reason: tc.reason, RejectedAt: now,
			}
			if len(emitted) != 1 || !reflect.DeepEqual(emitted[0], want) {
				t.Errorf("events\n got %+v\nwant [%+v]", emitted, want)
			}
		})
	}
}

func TestDecideRejectsCommandsOfOtherContexts(t *testing.T) {
	next, emitted := users.Decide(nil, events.PayOrder{OrderID: "o-1"}, commandID, now)
	if next != nil {
		t.Errorf("a foreign command created user %+v", next)
	}
	if len(emitted) != 1 {
		t.Fatalf("events %+v, want one rejection", emitted)
	}
	r, ok := emitted[0].(events.CommandRejected)
	if !ok || r.Code != events.CodeInvalidCommand || r.CommandType != "orders.pay-order.v1" {
		t.Errorf("event %+v, want an invalid_command rejection of orders.pay-order.v1", emitted[0])
	}
}
