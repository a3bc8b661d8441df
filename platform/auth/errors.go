package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is a request refused by authentication (401) or authorization
// (403). Its Detail is written for the client: it says what was missing
// or wrong and how to fix it, never which part of a credential was right.
type Error struct {
	// Status is 401 (no or bad credentials) or 403 (a scope is missing).
	Status int
	// Code is the error of RFC 6750: empty when no credentials were sent,
	// "invalid_request", "invalid_token" or "insufficient_scope".
	Code string
	// Detail says what was wrong and what to do.
	Detail string
	// Scope is the scope that was missing (403).
	Scope string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return "authentication: " + e.Detail
	}
	return e.Code + ": " + e.Detail
}

// The RFC 6750 error codes.
const (
	codeInvalidRequest    = "invalid_request"
	codeInvalidToken      = "invalid_token"
	codeInsufficientScope = "insufficient_scope"
)

func unauthenticated(code, format string, args ...any) *Error {
	return &Error{Status: 401, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// ConfigError is one problem of an authentication configuration: where it
// is, as the keys that lead to it, and what to fix. Configuration loaders
// use ConfigPath to name its line.
type ConfigError struct {
	Path    []string
	Problem string
}

func (e *ConfigError) Error() string { return strings.Join(e.Path, ".") + ": " + e.Problem }

// ConfigPath returns Path.
func (e *ConfigError) ConfigPath() []string { return e.Path }

func configError(problem string, path ...string) error {
	return &ConfigError{Path: path, Problem: problem}
}

// within places the problems of err under the keys prefix.
func within(err error, prefix ...string) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var ce *ConfigError
		if errors.As(e, &ce) {
			out = append(out, &ConfigError{Path: append(append([]string(nil), prefix...), ce.Path...), Problem: ce.Problem})
			continue
		}
		out = append(out, fmt.Errorf("%s: %w", strings.Join(prefix, "."), e))
	}
	return errors.Join(out...)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func joinErrors(errs []error) error { return errors.Join(errs...) }

// maxScopeLen bounds one scope.
const maxScopeLen = 200

// ValidScope reports whether s has the shape of a scope: 1 to 200
// characters from a-z A-Z 0-9 and : . _ -, not starting or ending with
// a colon and without empty parts.
func ValidScope(s string) bool {
	if s == "" || len(s) > maxScopeLen || s[0] == ':' || s[len(s)-1] == ':' || strings.Contains(s, "::") {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":._-", c) >= 0) {
			return false
		}
	}
	return true
}

func validateScopes(scopes []string, key string) error {
	var errs []error
	if len(scopes) == 0 {
		errs = append(errs, configError(fmt.Sprintf("at least one scope is needed, e.g. %s or %s", ScopeCommandsWrite, ScopeQueriesRead), key))
	}
	for i, s := range scopes {
		if !ValidScope(s) {
			errs = append(errs, configError(fmt.Sprintf("%q is not a scope: use parts of a-z 0-9 . _ - separated by colons, e.g. %s",
				s, ScopeCommandsWrite), key, strconv.Itoa(i)))
		}
	}
	return errors.Join(errs...)
}
