package consul_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/consul"
)

func TestConfigNeverShowsTheToken(t *testing.T) {
	const token = "b7e1c4d2-acl-token-9f8e"
	cfg, err := consul.ConfigFromEnv(env(map[string]string{
		consul.EnvHTTPAddr: "https://consul.internal:8501", consul.EnvHTTPToken: token, consul.EnvCACert: "/etc/consul/ca.pem",
	}))
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "%#v": fmt.Sprintf("%#v", cfg), "%s": fmt.Sprintf("%s", cfg),
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(y)
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("consul", "config", cfg)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("consul", "config", cfg)
	outputs["slog text"], outputs["slog json"] = text.String(), js.String()
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, token) {
				t.Fatalf("the token shows: %s", out)
			}
			if !strings.Contains(out, "consul.internal:8501") {
				t.Fatalf("the address is missing: %s", out)
			}
		})
	}
	if !strings.Contains(outputs["json"], `"token":"***"`) || !strings.Contains(outputs["%#v"], "***") {
		t.Errorf("a set token should show as ***: %s / %s", outputs["json"], outputs["%#v"])
	}
}
