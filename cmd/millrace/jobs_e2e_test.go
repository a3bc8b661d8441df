package main_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jobsRules are the jobs of the end-to-end test: a sweep every 2 s of the
// orders left unpaid for a second, and the daily sales report, disabled
// (triggered by hand).
const jobsRules = `jobs:
  close-unpaid-orders:
    every: 2s
    command: orders.sweep-unpaid-orders.v1
    payload: '{"placed_before": "{{ .FireTime | add "-1s" | rfc3339 }}"}'
    timeout: 20s
  daily-sales-report:
    cron: "0 5 0 * * *"
    enabled: false
    command: orders.close-sales-day.v1
    payload: '{"date": "{{ .FireTime | days -1 | date }}"}'
`

// TestDevScheduledJobs runs millrace dev with jobs: the sweep expires an
// order left unpaid and leaves a paid one alone; the report, triggered by
// hand with millrace jobs trigger, records its run; millrace jobs list and
// history show both, lateness included.
func TestDevScheduledJobs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "millrace.yaml")
	if err := os.WriteFile(path, []byte(jobsRules), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MILLRACE_CONFIG", path)
	dev := startDev(t, filepath.Join(dir, "data"), freeAddr(t), freeAddr(t))

	reg := mustDo(t, "POST", dev.base+"/v1/users", map[string]any{"email": "ada@example.com", "name": "Ada Lovelace"},
		map[string]string{"Prefer": "wait=10"})
	userID, _ := reg.body["aggregate_id"].(string)
	if reg.status != http.StatusCreated || userID == "" {
		t.Fatalf("register user: status %d, body %s", reg.status, reg.raw)
	}
	place := func() string {
		r := mustDo(t, "POST", dev.base+"/v1/orders", map[string]any{
			"user_id": userID, "lines": []map[string]any{{"sku": "MUG-01", "quantity": 1, "unit_price_cents": 1250}},
		}, map[string]string{"Prefer": "wait=10"})
		id, _ := r.body["aggregate_id"].(string)
		if r.status != http.StatusCreated || id == "" {
			t.Fatalf("place order: status %d, body %s", r.status, r.raw)
		}
		return id
	}
	paid := place()
	if r := mustDo(t, "POST", dev.base+"/v1/orders/"+paid+"/pay", map[string]any{"amount_cents": 1250, "payment_ref": "pay-1"},
		map[string]string{"Prefer": "wait=10"}); r.status >= 300 {
		t.Fatalf("pay order: status %d, body %s", r.status, r.raw)
	}
	unpaid := place()

	var order response
	waitFor(t, 30*time.Second, "the sweep to expire the unpaid order", func() bool {
		order = mustDo(t, "GET", dev.base+"/v1/orders/"+unpaid, nil, nil)
		return order.body["status"] == "cancelled"
	})
	if reason, _ := order.body["cancel_reason"].(string); !strings.HasPrefix(reason, "expired unpaid") {
		t.Errorf("cancelled order's reason = %q, want it to say it expired unpaid", reason)
	}
	if r := mustDo(t, "GET", dev.base+"/v1/orders/"+paid, nil, nil); r.body["status"] != "paid" {
		t.Errorf("the paid order is %v after the sweeps, want paid", r.body["status"])
	}

	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	jobs := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"jobs", "--admin-url", dev.base}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("millrace jobs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := jobs("trigger", "daily-sales-report", "--wait", "20s")
	if !strings.Contains(out, "triggered daily-sales-report: run ") || !strings.Contains(out, "manual") || !strings.Contains(out, "succeeded") {
		t.Errorf("jobs trigger printed:\n%s\nwant the manual run, succeeded", out)
	}
	list := jobs("list")
	for _, want := range []string{"close-unpaid-orders", "every 2s", "daily-sales-report", "cron 0 5 0 * * *", "false", "(leads)"} {
		if !strings.Contains(list, want) {
			t.Errorf("jobs list does not show %q:\n%s", want, list)
		}
	}
	hist := jobs("history", "close-unpaid-orders", "--limit", "3")
	if lines := strings.Split(strings.TrimSpace(hist), "\n"); len(lines) < 2 || !strings.Contains(lines[0], "LATENESS") ||
		!strings.Contains(hist, "schedule") || !strings.Contains(hist, "succeeded") {
		t.Errorf("jobs history printed:\n%s\nwant runs triggered by the schedule, succeeded, with their lateness", hist)
	}
	if r := mustDo(t, "GET", dev.base+"/admin/jobs/nope/history", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("history of an unknown job: status %d, want 404", r.status)
	}
}

// TestDevRefusesBadCron: a job whose cron expression is wrong stops
// millrace dev at start, with a message naming the file, line, job and
// field.
func TestDevRefusesBadCron(t *testing.T) {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "millrace.yaml")
	bad := strings.Replace(jobsRules, `cron: "0 5 0 * * *"`, `cron: "0 5 24 * * *"`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev", "--config", path, "--data-dir", filepath.Join(dir, "data"),
		"--http-addr", freeAddr(t), "--kafka-addr", freeAddr(t))
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("millrace dev started with a bad cron expression:\n%s", out)
	}
	want := `millrace.yaml:8: jobs.daily-sales-report.cron: the hours field "24": end of range (24) above maximum (23)`
	if !strings.Contains(string(out), want) {
		t.Errorf("millrace dev said:\n%s\nwant %q", out, want)
	}
}
