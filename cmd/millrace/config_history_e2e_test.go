package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/consul/consultest"
)

// startDevWithArgs starts millrace dev with extra flags and environment
// variables (no Consul unless given) and returns it once ready, with what
// it printed.
func startDevWithArgs(t *testing.T, args []string, env ...string) (*devProcess, *bytes.Buffer) {
	t.Helper()
	return launchDev(t, append([]string{"dev", "--http-addr", freeAddr(t), "--log-level", "info"}, args...),
		append([]string{"KAFKA_BROKERS=", "CONSUL_HTTP_ADDR=", "MILLRACE_CONFIG="}, env...)...)
}

// register registers a user with a fresh e-mail address, asking the
// gateway to wait for the outcome.
func register(t *testing.T, dev *devProcess, n int) response {
	t.Helper()
	return mustDo(t, "POST", dev.base+"/v1/users", map[string]any{"email": fmt.Sprintf("user%d@example.com", n), "name": "User"},
		map[string]string{"Prefer": "wait=10"})
}

// configCLI runs millrace config against dev and fails the test on error.
func configCLI(t *testing.T, dev *devProcess, args ...string) string {
	t.Helper()
	stdout, stderr, err := cli(t, []string{"MILLRACE_ADMIN_URL=" + dev.base, "MILLRACE_TOKEN=", "USER=ci"}, append([]string{"config"}, args...)...)
	if err != nil {
		t.Fatalf("millrace config %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// TestDevConfigFileHistoryAndFlag runs millrace dev on a rules file with a
// setting from the environment over it, turns the gateway_prefer_wait flag
// off with config set (commands are answered 202 at once, whatever the
// client prefers), and rolls it back from the history, which outlives a
// restart.
func TestDevConfigFileHistoryAndFlag(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "millrace.yaml")
	if err := os.WriteFile(path, []byte("# rules\ngateway:\n  max_in_flight: 500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	kafkaAddr := freeAddr(t)
	start := func() (*devProcess, string) {
		t.Helper()
		dev, printed := startDevWithArgs(t, []string{"--data-dir", dataDir, "--kafka-addr", kafkaAddr},
			"MILLRACE_CONFIG="+path, "MILLRACE_RULES__GATEWAY__MAX_IN_FLIGHT=77")
		return dev, printed.String()
	}
	dev, printed := start()
	if want := "rules     defaults + " + path + " (watched) + MILLRACE_RULES__GATEWAY__MAX_IN_FLIGHT; config set writes " + path; !strings.Contains(printed, want) {
		t.Errorf("ready banner does not say %q:\n%s", want, printed)
	}
	if got := configCLI(t, dev, "get", "gateway.max_in_flight"); got != "77\n" {
		t.Errorf("gateway.max_in_flight = %q, want 77 from the environment over the file's 500", got)
	}
	if r := register(t, dev, 1); r.status != http.StatusCreated || r.header.Get("Preference-Applied") != "wait=10" {
		t.Fatalf("with the flag on: status %d, Preference-Applied %q; want 201 after waiting", r.status, r.header.Get("Preference-Applied"))
	}

	out := configCLI(t, dev, "set", "features.gateway_prefer_wait", "false", "--as", "ops", "--reason", "shed load")
	if !strings.Contains(out, "recorded as version 2") {
		t.Errorf("set said:\n%s", out)
	}
	if r := register(t, dev, 2); r.status != http.StatusAccepted || r.header.Get("Preference-Applied") != "" {
		t.Errorf("with the flag off: status %d, Preference-Applied %q; want 202 at once", r.status, r.header.Get("Preference-Applied"))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "# rules\ngateway:\n  max_in_flight: 500\nfeatures:\n  gateway_prefer_wait: false\n" {
		t.Errorf("rules file after set:\n%s", data)
	}

	// The history outlives a restart: it is read back from its topic, and
	// the unchanged file is not recorded again.
	if err := dev.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := <-dev.exited; err != nil {
		t.Fatalf("millrace dev exited with %v", err)
	}
	dev, _ = start()
	hist := configCLI(t, dev, "history")
	for _, want := range []string{"History of file://", "found at start", "first version (1 settings)",
		"ops", "config set features.gateway_prefer_wait", "+ features.gateway_prefer_wait: false"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history does not say %q:\n%s", want, hist)
		}
	}
	if n := strings.Count(hist, "\n"); n != 4 { // title, header, two versions
		t.Errorf("history has %d lines, want two versions:\n%s", n, hist)
	}

	out = configCLI(t, dev, "rollback", "1")
	if !strings.Contains(out, "recorded as version 3") {
		t.Errorf("rollback said:\n%s", out)
	}
	if r := register(t, dev, 3); r.status != http.StatusCreated || r.header.Get("Preference-Applied") != "wait=10" {
		t.Errorf("after the rollback: status %d, Preference-Applied %q; want the flag back on", r.status, r.header.Get("Preference-Applied"))
	}
	if data, _ := os.ReadFile(path); string(data) != "# rules\ngateway:\n  max_in_flight: 500\n" {
		t.Errorf("rules file after the rollback:\n%s\nwant version 1 byte for byte", data)
	}
}

// TestDevRefusesMisspeltRulesVariable starts millrace dev with a
// MILLRACE_RULES__ variable that names no setting: it refuses to start and
// names the variable it probably meant.
func TestDevRefusesMisspeltRulesVariable(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "dev", "--data-dir", dataDir, "--http-addr", freeAddr(t), "--kafka-addr", freeAddr(t))
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS=", "MILLRACE_CONFIG=", "CONSUL_HTTP_ADDR=",
		"MILLRACE_RULES__GATEWAY__MAX_INFLIGHT=5", "MILLRACE_RULES__LOG_LEVEL=loud")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("millrace dev: %v, want exit status 1; output:\n%s", err, out)
	}
	for _, want := range []string{
		"MILLRACE_RULES__GATEWAY__MAX_INFLIGHT names no setting; did you mean MILLRACE_RULES__GATEWAY__MAX_IN_FLIGHT?",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the data directory was created (%v): something started before the rules were checked", err)
	}

	// A variable that is well named but invalid is named too.
	cmd = exec.CommandContext(ctx, bin, "dev", "--data-dir", dataDir, "--http-addr", freeAddr(t), "--kafka-addr", freeAddr(t))
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS=", "MILLRACE_CONFIG=", "CONSUL_HTTP_ADDR=", "MILLRACE_RULES__LOG_LEVEL=loud")
	out, _ = cmd.CombinedOutput()
	if want := `MILLRACE_RULES__LOG_LEVEL: log_level: log level "loud": want debug, info, warn or error`; !strings.Contains(string(out), want) {
		t.Errorf("output does not say %q:\n%s", want, out)
	}
}

// TestDevConfigFromConsulKV runs millrace dev with its rules in a real
// Consul agent: a value written there (by config set --consul, before and
// while it runs) is applied, an invalid one written directly is refused
// while the last good one stays, and the history names who did what.
func TestDevConfigFromConsulKV(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	consulEnv := []string{"CONSUL_HTTP_ADDR=" + agent.Addr(), "MILLRACE_ENV=e2e"}
	set := func(args ...string) string {
		t.Helper()
		stdout, stderr, err := cli(t, append([]string{"USER=ci"}, consulEnv...), append([]string{"config", "set", "--consul"}, args...)...)
		if err != nil {
			t.Fatalf("millrace config set --consul %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		return stdout
	}
	// Before the process runs: the key is written directly, checked over
	// the defaults; a value that would be refused is refused.
	if out := set("gateway.max_in_flight", "99", "--as", "alice"); !strings.Contains(out, "Wrote consul:millrace/e2e/all/rules at http://"+agent.Addr()) {
		t.Errorf("set --consul said:\n%s", out)
	}
	_, stderr, err := cli(t, consulEnv, "config", "set", "--consul", "gateway.max_in_flight", "many")
	if err == nil || !strings.Contains(stderr, `consul:millrace/e2e/all/rules:2: cannot use "many" as a whole number`) {
		t.Errorf("an invalid set --consul: %v\n%s", err, stderr)
	}

	dev, printed := startDevWithEnv(t, consulEnv...)
	if !strings.Contains(printed.String(), "config set writes consul:millrace/e2e/all/rules") {
		t.Errorf("ready banner:\n%s", printed)
	}
	if got := configCLI(t, dev, "get", "gateway.max_in_flight"); got != "99\n" {
		t.Errorf("gateway.max_in_flight = %q, want 99 from Consul KV", got)
	}

	// While it runs: through the process, and directly.
	if out := configCLI(t, dev, "set", "gateway.max_in_flight", "55", "--as", "bob"); !strings.Contains(out, "in force as configuration version 2") {
		t.Errorf("set said:\n%s", out)
	}
	client := agent.Client(t)
	if _, err := client.KV().Put(&api.KVPair{Key: "millrace/e2e/all/rules", Value: []byte("gateway:\n  max_in_flight: -1\n")}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the invalid value to be refused", func() bool {
		return strings.Contains(configCLI(t, dev, "get"), "# LAST CHANGE REFUSED")
	})
	out := configCLI(t, dev, "get")
	if !strings.Contains(out, "consul:millrace/e2e/all/rules:2: gateway.max_in_flight") || !strings.Contains(out, "max_in_flight: 55") {
		t.Errorf("get after a refused change does not name it, or lost the last good value:\n%s", out)
	}
	hist := configCLI(t, dev, "history")
	// Version 1 was written before the process ran: the note beside the
	// key still names alice.
	for _, want := range []string{"History of consul:millrace/e2e/all/rules", "alice", "first version (1 settings)", "bob", "gateway.max_in_flight: 99 -> 55"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history does not say %q:\n%s", want, hist)
		}
	}
	if strings.Contains(hist, "-> -1") {
		t.Errorf("a refused change is in the history:\n%s", hist)
	}
	if out := configCLI(t, dev, "rollback", "1"); !strings.Contains(out, "recorded as version 3") {
		t.Errorf("rollback said:\n%s", out)
	}
	if got := configCLI(t, dev, "get", "gateway.max_in_flight"); got != "99\n" {
		t.Errorf("after the rollback gateway.max_in_flight = %q, want 99", got)
	}
}
