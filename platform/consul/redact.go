package consul

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/millrace/millrace/platform/auth/secret"
)

// A Config holds the ACL token. Every way of printing or encoding one
// leaves the token out: String (above), %#v, slog, JSON and YAML show
// whether a token is set, never what it is. Configuration dumps (millrace
// config get) and log records can carry a Config as it is.

// redacted is what a Config prints as: its fields, the token redacted.
type redacted struct {
	Address    string        `json:"address" yaml:"address"`
	Scheme     string        `json:"scheme" yaml:"scheme"`
	Token      secret.String `json:"token" yaml:"token"`
	TokenFile  string        `json:"token_file,omitempty" yaml:"token_file,omitempty"`
	Datacenter string        `json:"datacenter,omitempty" yaml:"datacenter,omitempty"`
	TLS        TLSConfig     `json:"tls" yaml:"tls"`
}

func (c Config) redacted() redacted {
	return redacted{Address: c.Address, Scheme: c.Scheme, Token: secret.String(c.Token), TokenFile: c.TokenFile,
		Datacenter: c.Datacenter, TLS: c.TLS}
}

// GoString implements fmt.GoStringer (%#v) without the token.
func (c Config) GoString() string { return fmt.Sprintf("consul.Config%+v", c.redacted()) }

// LogValue implements slog.LogValuer without the token.
func (c Config) LogValue() slog.Value {
	r := c.redacted()
	return slog.GroupValue(
		slog.String("address", r.Address), slog.String("scheme", r.Scheme),
		slog.Any("token", r.Token), slog.String("token_file", r.TokenFile),
		slog.String("datacenter", r.Datacenter),
	)
}

// MarshalJSON encodes c without the token.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

// MarshalYAML encodes c without the token (gopkg.in/yaml.v3).
func (c Config) MarshalYAML() (any, error) { return c.redacted(), nil }
