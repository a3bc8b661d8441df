// Package secret marks configuration values that must never be printed:
// passwords, shared secrets, tokens.
//
// A String holds its value like a string, decodes from YAML, JSON and
// flags like one, and is read with Reveal where it is used (a SASL
// handshake, a signature check). Every way of printing it prints Redacted
// instead: fmt (every verb, %#v included), slog (LogValue), JSON and YAML
// encoding. A configuration dump of a struct holding String fields, or a
// log record that carries one, shows that a secret is set, never what it
// is; an empty String prints as empty, so a dump still shows that it is
// unset.
//
// Code that dumps configuration (millrace config get, /admin/config) needs
// no list of secret fields: encoding a struct redacts its String fields.
// Fields of type String are also tagged `secret:"true"`, for configuration
// code that finds secrets by tag.
package secret

import (
	"fmt"
	"io"
	"log/slog"
)

// Redacted is what a non-empty String prints as.
const Redacted = "***"

// String is a secret text value. The zero value is the empty secret
// ("not set"). Convert with String(s) to make one; call Reveal to use it.
type String string

// Reveal returns the secret itself, for the one place that needs it.
func (s String) Reveal() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s String) IsSet() bool { return s != "" }

// redacted is the printable form: Redacted, or empty for an empty secret.
func (s String) redacted() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// String implements fmt.Stringer with the redacted form.
func (s String) String() string { return s.redacted() }

// GoString implements fmt.GoStringer (%#v) with the redacted form.
func (s String) GoString() string { return fmt.Sprintf("secret.String(%q)", s.redacted()) }

// Format implements fmt.Formatter: every verb prints the redacted form,
// so that no verb (%x, %d, %q …) reaches the value.
func (s String) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	if verb == 'q' {
		_, _ = fmt.Fprintf(f, "%q", s.redacted())
		return
	}
	_, _ = io.WriteString(f, s.redacted())
}

// LogValue implements slog.LogValuer with the redacted form.
func (s String) LogValue() slog.Value { return slog.StringValue(s.redacted()) }

// MarshalJSON encodes the redacted form. Decoding is a plain string's: a
// configuration file holds the real value.
func (s String) MarshalJSON() ([]byte, error) {
	return []byte(`"` + s.redacted() + `"`), nil
}

// MarshalYAML encodes the redacted form (gopkg.in/yaml.v3).
func (s String) MarshalYAML() (any, error) { return s.redacted(), nil }
