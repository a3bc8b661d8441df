package events

import "time"

// RegisterUser asks the users context to register a new user.
type RegisterUser struct {
	UserID   string `json:"user_id"`
	Email    string `json:"email"`
	FullName string `json:"name"`
}

func (RegisterUser) Name() string  { return "users.register-user.v1" }
func (c RegisterUser) Key() string { return c.UserID }

// UserRegistered records that a user now exists.
type UserRegistered struct {
	UserID       string    `json:"user_id"`
	Email        string    `json:"email"`
	FullName     string    `json:"name"`
	RegisteredAt time.Time `json:"registered_at"`
}

func (UserRegistered) Name() string  { return "users.user-registered.v1" }
func (e UserRegistered) Key() string { return e.UserID }
