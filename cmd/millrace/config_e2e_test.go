package main_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDevRefusesBadRulesFile starts millrace dev with a rules file that
// must not be used and checks that it refuses to start, saying which file,
// which line and what is wrong, before it starts anything.
func TestDevRefusesBadRulesFile(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, doc string
		want            []string
	}{
		{"invalid values", "millrace.yaml",
			"log_level: loud\ngateway:\n  rate_limits:\n    - route: \"POST /v1/order\"\n      rate: 5\n      burst: 0\n",
			[]string{
				`millrace.yaml:1: log_level: log level "loud": want debug, info, warn or error`,
				`millrace.yaml:4: gateway.rate_limits[0].route: "POST /v1/order" is not a route of the gateway; use one of "*" (every request), "POST /v1/users", "POST /v1/orders"`,
				`millrace.yaml:6: gateway.rate_limits[0].burst: must be at least 1 request`,
			}},
		{"typo", "millrace.yaml", "gateway:\n  max_in_fligth: 10\n",
			[]string{`millrace.yaml:2: unknown field "max_in_fligth"; known here: clients, rate_limits, max_in_flight, timeouts, breakers`}},
		{"syntax", "millrace.yaml", "gateway:\n  timeouts:\n    default: 1s\n   routes: {}\n",
			[]string{`millrace.yaml:4: did not find expected key`}},
		{"json", "millrace.json", "{\n  \"gateway\": {\"max_in_flight\": \"many\"}\n}\n",
			[]string{`millrace.json:2: cannot use "many" as a whole number`}},
		{"missing", "absent.yaml", "", []string{"absent.yaml: no such file or directory"}},
		{"unknown format", "millrace.toml", "x = 1\n", []string{"name it .yaml, .yml or .json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if tc.doc != "" {
				if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dataDir := filepath.Join(dir, "data")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "dev", "--config", path, "--data-dir", dataDir,
				"--http-addr", freeAddr(t), "--kafka-addr", freeAddr(t))
			cmd.Env = append(os.Environ(), "KAFKA_BROKERS=", "MILLRACE_CONFIG=")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("millrace dev: %v, want exit status 1; output:\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was created (%v): something started before the rules were checked", err)
			}
		})
	}
}

// TestDevRulesFileLive runs millrace dev on the example rules file, then
// changes the file while it runs: a tight rate limit comes into force, a
// broken change is refused while the tight limit stays, and a change that
// drops the limits and raises the log level comes into force too.
func TestDevRulesFileLive(t *testing.T) {
	example, err := os.ReadFile("../../deploy/millrace.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "millrace.yaml")
	writeFile := func(doc string) {
		t.Helper()
		// As editors save: a new file renamed over the old one.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(string(example))
	t.Setenv("MILLRACE_CONFIG", path)
	dev := startDev(t, filepath.Join(dir, "data"), freeAddr(t), freeAddr(t))
	order := dev.base + "/v1/orders/0f8fad5b-d9cb-469f-a165-70867728950e"

	// The example's "*" limit: 100 per client at once.
	if r := mustDo(t, "GET", order, nil, nil); r.status != http.StatusNotFound || r.header.Get("RateLimit-Limit") != "100" {
		t.Fatalf("under the example rules: status %d, RateLimit-Limit %q; want 404 and 100", r.status, r.header.Get("RateLimit-Limit"))
	}

	writeFile("gateway:\n  rate_limits:\n    - route: \"GET /v1/orders/{id}\"\n      per_client: true\n      rate: 0.01\n      burst: 2\n")
	var limited response
	waitFor(t, 30*time.Second, "the tight limit to come into force", func() bool {
		limited = mustDo(t, "GET", order, nil, nil)
		return limited.status == http.StatusTooManyRequests
	})
	if ra, err := strconv.Atoi(limited.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", limited.header.Get("Retry-After"))
	}
	if limited.body["type"] != "https://millrace.dev/problems/rate-limited" {
		t.Errorf("429 body = %s, want a rate-limited problem", limited.raw)
	}

	writeFile("gateway:\n  rate_limits:\n    - route: \"GET /v1/orders/{id}\"\n      rate: fast\n      burst: 1\n")
	waitFor(t, 30*time.Second, "the broken change to be refused", func() bool {
		return strings.Contains(stderrOf(dev), "configuration change refused")
	})
	logs := stderrOf(dev)
	if !strings.Contains(logs, `millrace.yaml:4: cannot use \"fast\" as a number`) {
		t.Errorf("the refusal does not name file, line and problem:\n%s", logs)
	}
	if r := mustDo(t, "GET", order, nil, nil); r.status != http.StatusTooManyRequests {
		t.Errorf("after the refused change: status %d, want 429 (the last good rules stay)", r.status)
	}

	// --log-level is warn; the file's info level shows the "applied" record.
	writeFile("log_level: info\ngateway: {}\n")
	waitFor(t, 30*time.Second, "the limits to be dropped", func() bool {
		return mustDo(t, "GET", order, nil, nil).status == http.StatusNotFound
	})
	waitFor(t, 10*time.Second, "an info record of the change", func() bool {
		return strings.Contains(stderrOf(dev), "configuration applied")
	})
}

// stderrOf returns what the process wrote to stderr so far, read under the
// lock its writer takes.
func stderrOf(p *devProcess) string {
	lw := p.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return p.stderr.String()
}
