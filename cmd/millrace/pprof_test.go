package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
)

// millrace dev --pprof serves Go's profiles beside the gateway, on a
// loopback address only; without the flag there are none.
func TestDevPprof(t *testing.T) {
	t.Run("with --pprof", func(t *testing.T) {
		d := startDevInProcess(t, nil, "--pprof")
		status, _, body := d.send(t, http.MethodGet, "/debug/pprof/cmdline", "")
		if want := strings.Join(os.Args, "\x00"); status != http.StatusOK || string(body) != want {
			t.Errorf("GET /debug/pprof/cmdline = %d %q, want 200 and this process's command line %q", status, body, want)
		}
		if status, _, _ := d.send(t, http.MethodGet, "/healthz", ""); status != http.StatusOK {
			t.Errorf("GET /healthz beside the profiles = %d, want 200", status)
		}
	})
	t.Run("without", func(t *testing.T) {
		d := startDevInProcess(t, nil)
		if status, _, _ := d.send(t, http.MethodGet, "/debug/pprof/cmdline", ""); status == http.StatusOK {
			t.Errorf("GET /debug/pprof/cmdline = 200 without --pprof")
		}
	})
	t.Run("refused on a non-loopback address", func(t *testing.T) {
		err := run(context.Background(), []string{"dev", "--pprof", "--insecure", "--http-addr", "0.0.0.0:0",
			"--kafka-addr", freeLoopbackAddr(t), "--data-dir", t.TempDir()},
			func(string) string { return "" }, &lockedBuffer{}, &lockedBuffer{})
		if err == nil || !strings.Contains(err.Error(), "--pprof") || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("dev --pprof on 0.0.0.0: %v, want a refusal naming --pprof and loopback", err)
		}
	})
}
