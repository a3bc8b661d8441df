package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/auth/secret"
)

// settings is a configuration struct with a secret field, as dumps see it.
type settings struct {
	User     string        `json:"user" yaml:"user"`
	Password secret.String `json:"password" yaml:"password"`
}

const value = "correct-horse-battery-staple"

func TestEveryWayOfPrintingRedacts(t *testing.T) {
	s := settings{User: "u", Password: secret.String(value)}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-8v"} {
		outputs["fmt "+verb] = fmt.Sprintf(verb, s)
		outputs["fmt "+verb+" field"] = fmt.Sprintf(verb, s.Password)
	}
	outputs["Sprint"] = fmt.Sprint(s.Password)
	outputs["Sprintln"] = fmt.Sprintln(s, s.Password)
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	y, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(y)
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"slog text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"slog json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var buf bytes.Buffer
		slog.New(h.new(&buf)).Info("configured", "password", s.Password, "settings", s, slog.Any("any", s.Password))
		outputs[h.name] = buf.String()
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) {
				t.Fatalf("the secret shows: %s", out)
			}
			if !strings.Contains(out, secret.Redacted) {
				t.Fatalf("no %s where the secret is: %s", secret.Redacted, out)
			}
		})
	}
}

func TestDecodingKeepsTheValue(t *testing.T) {
	cases := []struct {
		name   string
		decode func(*settings) error
	}{
		{"json", func(s *settings) error { return json.Unmarshal([]byte(`{"user":"u","password":"`+value+`"}`), s) }},
		{"yaml", func(s *settings) error { return yaml.Unmarshal([]byte("user: u\npassword: "+value+"\n"), s) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			if err := tc.decode(&s); err != nil {
				t.Fatal(err)
			}
			if s.Password.Reveal() != value || !s.Password.IsSet() {
				t.Fatalf("decoded %q, want the value itself", s.Password.Reveal())
			}
		})
	}
}

func TestEmptyPrintsEmpty(t *testing.T) {
	var s secret.String
	if s.IsSet() {
		t.Fatal("the zero secret is set")
	}
	if got := fmt.Sprintf("[%v]", s); got != "[]" {
		t.Fatalf("empty secret printed as %s, want []", got)
	}
	j, _ := json.Marshal(settings{})
	if !strings.Contains(string(j), `"password":""`) {
		t.Fatalf("empty secret encoded as %s", j)
	}
}

func ExampleString() {
	password := secret.String("hunter2")
	fmt.Println("password:", password)
	fmt.Printf("%#v\n", password)
	fmt.Println(len(password.Reveal()), "bytes, used where they are needed")
	// Output:
	// password: ***
	// secret.String("***")
	// 7 bytes, used where they are needed
}
