package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// devProcess is one `millrace dev` process started by a test.
type devProcess struct {
	cmd    *exec.Cmd
	base   string
	stderr *bytes.Buffer
	exited chan error
}

// buildBinary compiles cmd/millrace once per test binary run.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "millrace-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "millrace")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startDev starts millrace dev and waits until it says it is ready.
func startDev(t *testing.T, dataDir, httpAddr, kafkaAddr string) *devProcess {
	t.Helper()
	p, _ := launchDev(t, []string{"dev", "--data-dir", dataDir, "--http-addr", httpAddr, "--kafka-addr", kafkaAddr, "--log-level", "warn"},
		"KAFKA_BROKERS=")
	return p
}

// launchDev runs the millrace binary with args (dev and its flags; the
// process's base URL comes from --http-addr) and env added to the test's
// environment, and returns it once it printed its banner, with everything
// it printed on stdout. It is killed when the test ends, its stderr logged
// if the test failed.
func launchDev(t *testing.T, args []string, env ...string) (*devProcess, *bytes.Buffer) {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	for i, a := range args {
		if a == "--http-addr" && i+1 < len(args) {
			p.base = "http://" + args[i+1]
		}
	}
	cmd.Stderr = &lockedWriter{w: p.stderr}
	printed := &bytes.Buffer{}
	out := &lockedWriter{w: printed}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start millrace dev: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			_, _ = out.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "Press Ctrl-C") {
				close(ready)
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("millrace dev stderr:\n%s", stderrOf(p))
		}
	})
	select {
	case <-ready:
	case err := <-p.exited:
		t.Fatalf("millrace dev exited before ready: %v\n%s", err, stderrOf(p))
	case <-time.After(60 * time.Second):
		t.Fatalf("millrace dev not ready after 60s\n%s", stderrOf(p))
	}
	return p, printed
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func do(t *testing.T, method, url string, body any, headers map[string]string) (response, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r, nil
}

func mustDo(t *testing.T, method, url string, body any, headers map[string]string) response {
	t.Helper()
	r, err := do(t, method, url, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// TestDevKillAndRestart runs millrace dev as a process, streams commands
// into it, kills it with SIGKILL mid-stream, starts it again on the same
// data directory and checks that every command that got a 202 is
// reflected exactly once in every projection and in the notifications.
func TestDevKillAndRestart(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	dev := startDev(t, dataDir, httpAddr, kafkaAddr)

	reg := mustDo(t, "POST", dev.base+"/v1/users", map[string]any{"email": "ada@example.com", "name": "Ada Lovelace"},
		map[string]string{"Prefer": "wait=10"})
	if reg.status != http.StatusCreated {
		t.Fatalf("register user: status %d, body %s", reg.status, reg.raw)
	}
	userID, _ := reg.body["aggregate_id"].(string)
	if userID == "" {
		t.Fatalf("register user: no aggregate_id in %s", reg.raw)
	}

	// Stream orders, each placed then paid, until killed.
	type accepted struct{ commandID, orderID, kind string }
	var (
		mu       sync.Mutex
		accepts  []accepted
		sent     int
		killedAt = make(chan struct{})
	)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-killedAt:
					return
				default:
				}
				qty := 1 + (i % 3)
				r, err := do(t, "POST", dev.base+"/v1/orders", map[string]any{
					"user_id": userID,
					"lines":   []map[string]any{{"sku": "SKU-1", "quantity": qty, "unit_price_cents": 250}},
				}, nil)
				mu.Lock()
				sent++
				mu.Unlock()
				if err != nil || r.status != http.StatusAccepted {
					continue
				}
				cmdID, _ := r.body["command_id"].(string)
				orderID := strings.TrimPrefix(linkOf(r.body, "resource"), "/v1/orders/")
				mu.Lock()
				accepts = append(accepts, accepted{cmdID, orderID, "place"})
				mu.Unlock()
				if i%2 == 1 {
					continue // leave every other order unpaid
				}
				r, err = do(t, "POST", dev.base+"/v1/orders/"+orderID+"/pay", map[string]any{
					"amount_cents": qty * 250, "payment_ref": fmt.Sprintf("pay-%d-%d", w, i),
				}, nil)
				mu.Lock()
				sent++
				mu.Unlock()
				if err == nil && r.status == http.StatusAccepted {
					cmdID, _ := r.body["command_id"].(string)
					mu.Lock()
					accepts = append(accepts, accepted{cmdID, orderID, "pay"})
					mu.Unlock()
				}
			}
		}(w)
	}

	// Kill mid-stream, once a good number of commands was accepted.
	killAfter := 200 + rand.IntN(200)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(accepts)
		mu.Unlock()
		if n >= killAfter || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := dev.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill millrace dev: %v", err)
	}
	<-dev.exited
	close(killedAt)
	wg.Wait()
	mu.Lock()
	acceptedCmds := append([]accepted(nil), accepts...)
	mu.Unlock()
	if len(acceptedCmds) < 20 {
		t.Fatalf("only %d commands accepted before the kill", len(acceptedCmds))
	}

	// Start again on the same data directory.
	dev = startDev(t, dataDir, httpAddr, kafkaAddr)

	// Every accepted command reaches an outcome.
	succeededPay := map[string]bool{}
	placed := map[string]bool{}
	for _, a := range acceptedCmds {
		var out response
		waitFor(t, 90*time.Second, "outcome of "+a.commandID, func() bool {
			out = mustDo(t, "GET", dev.base+"/v1/commands/"+a.commandID, nil, nil)
			return out.status == http.StatusOK && out.body["status"] != "pending"
		})
		if out.body["status"] != "succeeded" {
			t.Fatalf("command %s (%s of order %s): %s", a.commandID, a.kind, a.orderID, out.raw)
		}
		switch a.kind {
		case "place":
			placed[a.orderID] = true
		case "pay":
			succeededPay[a.orderID] = true
		}
	}

	// The user's orders list every accepted order exactly once, and nothing
	// that was never sent.
	var list []any
	waitFor(t, 60*time.Second, "user orders projection", func() bool {
		r := mustDo(t, "GET", dev.base+"/v1/users/"+userID+"/orders", nil, nil)
		list = nil
		var arr []any
		if err := json.Unmarshal(r.raw, &arr); err == nil {
			list = arr
		} else if m, ok := r.body["orders"].([]any); ok {
			list = m
		}
		seen := 0
		for _, o := range list {
			if placed[o.(map[string]any)["order_id"].(string)] {
				seen++
			}
		}
		return seen == len(placed)
	})
	seen := map[string]int{}
	paidByDay := map[string]int64{}
	paidCount := 0
	for _, o := range list {
		m := o.(map[string]any)
		id := m["order_id"].(string)
		seen[id]++
		if m["status"] == "paid" {
			paidCount++
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("order %s listed %d times", id, n)
		}
	}
	if len(seen) > sent {
		t.Errorf("%d orders listed but at most %d were sent", len(seen), sent)
	}
	for id := range succeededPay {
		r := mustDo(t, "GET", dev.base+"/v1/orders/"+id, nil, nil)
		if r.body["status"] != "paid" {
			t.Errorf("order %s: status %v, want paid", id, r.body["status"])
		}
		paidAt, _ := r.body["paid_at"].(string)
		total, _ := r.body["total_cents"].(float64)
		if len(paidAt) >= 10 {
			paidByDay[paidAt[:10]] += int64(total)
		}
	}
	if paidCount < len(succeededPay) {
		t.Errorf("%d orders paid in the list, want at least the %d accepted payments", paidCount, len(succeededPay))
	}

	// Sales count each payment once.
	var gross int64
	for day := range paidByDay {
		r := mustDo(t, "GET", dev.base+"/v1/reports/sales?date="+day, nil, nil)
		for _, c := range r.body["currencies"].([]any) {
			gross += int64(c.(map[string]any)["gross_cents"].(float64))
		}
	}
	var wantGross int64
	for _, v := range paidByDay {
		wantGross += v
	}
	if paidCount == len(succeededPay) && gross != wantGross {
		t.Errorf("sales gross %d, want %d (sum of accepted payments)", gross, wantGross)
	}

	// One notification per event: registered + placed + paid.
	r := mustDo(t, "GET", dev.base+"/v1/users/"+userID+"/notifications", nil, nil)
	var notes []any
	if err := json.Unmarshal(r.raw, &notes); err != nil {
		notes, _ = r.body["notifications"].([]any)
	}
	wantNotes := 1 + len(seen) + paidCount
	waitFor(t, 30*time.Second, "notifications", func() bool {
		r := mustDo(t, "GET", dev.base+"/v1/users/"+userID+"/notifications", nil, nil)
		notes = nil
		if err := json.Unmarshal(r.raw, &notes); err != nil {
			notes, _ = r.body["notifications"].([]any)
		}
		return len(notes) >= wantNotes
	})
	if len(notes) != wantNotes {
		t.Errorf("%d notifications, want %d (1 registration + %d placed + %d paid)", len(notes), wantNotes, len(seen), paidCount)
	}
	t.Logf("sent %d requests (including those refused while the process was down), %d accepted before SIGKILL; after restart: %d orders, %d paid, %d notifications, duplicates 0",
		sent, len(acceptedCmds), len(seen), paidCount, len(notes))

	// A graceful stop exits 0.
	if err := dev.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-dev.exited:
		if err != nil {
			t.Fatalf("millrace dev after SIGTERM: %v\n%s", err, dev.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("millrace dev did not stop within 60s of SIGTERM")
	}
}

func linkOf(body map[string]any, name string) string {
	links, _ := body["links"].(map[string]any)
	s, _ := links[name].(string)
	return s
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waited %s for %s", within, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestKcatCommandIsHandled sends a command with kcat (librdkafka, a client
// millrace did not write) in CloudEvents binary mode, checks that millrace
// handles it, and reads the resulting event back with kcat.
func TestKcatCommandIsHandled(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat not found: run `make test`, which installs it")
	}
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	dev := startDev(t, t.TempDir(), httpAddr, kafkaAddr)

	const (
		commandID = "7d9c1f0e-3b6a-4c2e-9f7a-1e2d3c4b5a69"
		userID    = "0b5e7c3a-9d1f-4e6b-8a2c-5f4e3d2c1b0a"
	)
	produce := exec.Command(kcat, "-b", kafkaAddr, "-P", "-t", "users.commands", "-K", "|",
		"-H", "ce_id="+commandID,
		"-H", "ce_type=users.register-user.v1",
		"-H", "ce_source=/legacy/java-crm",
		"-H", "ce_specversion=1.0",
		"-H", "ce_subject="+userID,
		"-H", "content-type=application/json")
	produce.Stdin = strings.NewReader(userID + `|{"user_id":"` + userID + `","email":"grace@example.com","name":"Grace Hopper"}` + "\n")
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}

	var out response
	waitFor(t, 30*time.Second, "outcome of the kcat command", func() bool {
		out = mustDo(t, "GET", dev.base+"/v1/commands/"+commandID, nil, nil)
		return out.status == http.StatusOK && out.body["status"] != "pending"
	})
	if out.body["status"] != "succeeded" || out.body["type"] != "users.register-user.v1" || out.body["aggregate_id"] != userID {
		t.Fatalf("outcome of the kcat command: %s", out.raw)
	}

	// The event it caused, read back by kcat, is a CloudEvent naming its cause.
	consume := exec.Command(kcat, "-b", kafkaAddr, "-C", "-t", "users.events", "-o", "beginning", "-e", "-q",
		"-f", "%k %h %s\n")
	raw, err := consume.CombinedOutput()
	if err != nil {
		t.Fatalf("kcat consume: %v\n%s", err, raw)
	}
	got := string(raw)
	for _, want := range []string{
		userID + " ",
		"ce_type=users.user-registered.v1",
		"ce_source=/millrace/users",
		"ce_specversion=1.0",
		"ce_causationid=" + commandID,
		"ce_subject=" + userID,
		"content-type=application/json",
		`"email":"grace@example.com"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("kcat output lacks %q:\n%s", want, got)
		}
	}

	// millrace topics shows the users handler caught up (offsets are
	// committed about once a second, so wait for it).
	bin, _ := buildOnce()
	var topics []byte
	var usersLine string
	waitFor(t, 30*time.Second, "users group lag 0 in millrace topics", func() bool {
		topics, err = exec.Command(bin, "topics", "--brokers", kafkaAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("millrace topics: %v\n%s", err, topics)
		}
		for _, line := range strings.Split(string(topics), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "users" {
				usersLine = line
			}
		}
		f := strings.Fields(usersLine)
		return len(f) >= 7 && f[3] == "users.commands" && f[len(f)-1] == "0" && f[len(f)-2] == "1"
	})
}
