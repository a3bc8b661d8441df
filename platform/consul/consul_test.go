package consul_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/platform/discovery/discoverytest"
	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/leader/leadertest"
)

// TestConsul runs the shared suites and the crash handover against one
// real agent.
func TestConsul(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)

	t.Run("discovery suite", func(t *testing.T) {
		discoverytest.Run(t, func(t *testing.T) discoverytest.Harness {
			reg := consul.NewRegistry(client, consul.RegistryConfig{Logger: discoverytest.Logger(t)})
			t.Cleanup(func() { _ = reg.Close() })
			return discoverytest.Harness{Registrar: reg, Resolver: consul.NewResolver(client, consul.ResolverConfig{})}
		})
	})

	t.Run("leader suite", func(t *testing.T) {
		leadertest.Run(t, func(t *testing.T) leadertest.Harness {
			return leadertest.Harness{
				New: func(t *testing.T, key string) leader.Runner {
					return newLock(t, client, consul.LeaderConfig{Key: key})
				},
				Break: func(t *testing.T, key string) { destroyHolder(t, client, key) },
			}
		})
	})

	t.Run("leader killed hands over through its health check", func(t *testing.T) {
		testKilledLeader(t, agent, client)
	})
}

// newLock returns a lock with short timings for tests: a 5 s session, a
// 1 s lock delay.
func newLock(t testing.TB, client *api.Client, cfg consul.LeaderConfig) *consul.LeaderLock {
	t.Helper()
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 5 * time.Second
	}
	cfg.LockDelay = time.Second
	cfg.RetryInterval = 100 * time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = discoverytest.Logger(t)
	}
	l, err := consul.NewLeaderLock(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// destroyHolder destroys the session holding key, as an operator or an
// invalidated health check would.
func destroyHolder(t *testing.T, client *api.Client, key string) {
	t.Helper()
	pair, _, err := client.KV().Get(key, nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("lock %s has no holder to break: %v %v", key, pair, err)
	}
	if _, err := client.Session().Destroy(pair.Session, nil); err != nil {
		t.Fatalf("destroy session %s: %v", pair.Session, err)
	}
}

// Environment of the leader child process.
const (
	leaderChildEnv = "MILLRACE_CONSULTEST_LEADER_CHILD" // the lock key
	leaderAddrEnv  = "MILLRACE_CONSULTEST_LEADER_ADDR"  // the agent
)

// serveLeaderChild, in a child started by testKilledLeader, serves
// /healthz, registers itself with a health check, campaigns for the lock
// with its session bound to that check, and writes "leading" once it
// leads. It runs until its stdin closes or it is killed.
func serveLeaderChild() bool {
	key := os.Getenv(leaderChildEnv)
	if key == "" {
		return false
	}
	if err := runLeaderChild(key, os.Getenv(leaderAddrEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "leader child:", err)
	}
	return true
}

func runLeaderChild(key, addr string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	client, err := consul.NewClient(consul.Config{Address: addr})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	port := ln.Addr().(*net.TCPAddr).Port
	reg := consul.NewRegistry(client, consul.RegistryConfig{})
	defer reg.Close()
	id := discovery.NewID("leader-child", "127.0.0.1", port)
	err = reg.Register(ctx, discovery.Registration{
		ID: id, Service: "leader-child", Address: "127.0.0.1", Port: port,
		Check: discovery.Check{Interval: time.Second, Timeout: 500 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	fmt.Printf("registered %s\n", id)
	lock, err := consul.NewLeaderLock(client, consul.LeaderConfig{
		Key: key, ServiceID: id,
		// A TTL far beyond the test's patience: only the health check can
		// hand the lock on in time.
		SessionTTL: time.Minute, LockDelay: time.Second, RetryInterval: 100 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	return lock.Run(ctx, func(leaderCtx context.Context) error {
		fmt.Println("leading")
		<-leaderCtx.Done()
		return nil
	})
}

func testKilledLeader(t *testing.T, agent *consultest.Agent, client *api.Client) {
	key := "millrace/test/killed-leader-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), leaderChildEnv+"="+key, leaderAddrEnv+"="+agent.Addr())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		<-exited
	})

	lines := bufio.NewScanner(stdout)
	var childID string
	for lines.Scan() {
		line := lines.Text()
		if id, ok := strings.CutPrefix(line, "registered "); ok {
			childID = id
			t.Cleanup(func() { _ = client.Agent().ServiceDeregister(childID) })
		}
		if line == "leading" {
			break
		}
	}
	if childID == "" || lines.Err() != nil {
		t.Fatalf("leader child did not report leading (registered %q, %v)", childID, lines.Err())
	}

	// A contender in this process, with a TTL as long as the child's.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	leading := make(chan struct{})
	done := make(chan error, 1)
	contender := newLock(t, client, consul.LeaderConfig{Key: key, SessionTTL: time.Minute})
	go func() {
		done <- contender.Run(ctx, func(leaderCtx context.Context) error {
			close(leading)
			<-leaderCtx.Done()
			return nil
		})
	}()

	pair, _, err := client.KV().Get(key, nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("lock %s not held before the kill: %v %v", key, pair, err)
	}
	childSession := pair.Session

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	select {
	case <-leading:
	case <-time.After(30 * time.Second):
		t.Fatalf("contender did not lead within 30s of the leader's kill (session TTL 1m)")
	}
	if info, _, err := client.Session().Info(childSession, nil); err != nil || info != nil {
		t.Errorf("dead leader's session %s still exists (%v, %v): it should have been invalidated by its health check", childSession, info, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("contender Run = %v", err)
	}
}

// TestAgentRestart stops the agent and starts it again (a dev-mode agent
// forgets everything): a registration is restored by its keeper, a
// resolver answers again, and a leader whose session cannot be renewed
// gives up the lead, then leads again.
func TestAgentRestart(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	logger := discoverytest.Logger(t)

	srv := httpHealth(t)
	reg := consul.NewRegistry(client, consul.RegistryConfig{RetryInterval: 200 * time.Millisecond, Logger: logger})
	t.Cleanup(func() { _ = reg.Close() })
	r := discovery.Registration{
		ID: "restart-1", Service: "restart", Address: "127.0.0.1", Port: srv,
		Check: discovery.Check{Interval: time.Second, Timeout: 500 * time.Millisecond},
	}
	if err := reg.Register(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	res := consul.NewResolver(client, consul.ResolverConfig{})
	waitHealthy(t, res, "restart", 1)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	terms := make(chan context.Context, 4)
	lock := newLock(t, client, consul.LeaderConfig{Key: "millrace/test/restart", SessionTTL: 2 * time.Second})
	runDone := make(chan error, 1)
	go func() {
		runDone <- lock.Run(ctx, func(leaderCtx context.Context) error {
			terms <- leaderCtx
			<-leaderCtx.Done()
			return nil
		})
	}()
	first := awaitTerm(t, terms)

	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := res.Healthy(t.Context(), "restart", 0); err == nil {
		t.Fatalf("resolver answered with the agent stopped")
	}
	select {
	case <-first.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("leader kept leading 30s after Consul went away (session TTL 2s)")
	}
	if !errors.Is(context.Cause(first), leader.ErrLost) {
		t.Errorf("cause = %v, want leader.ErrLost", context.Cause(first))
	}

	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	// The keeper registers the instance again; it starts critical and is
	// healthy once its check passed.
	waitHealthy(t, res, "restart", 1)
	second := awaitTerm(t, terms)
	if second.Err() != nil {
		t.Fatalf("second term started cancelled")
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func awaitTerm(t *testing.T, terms <-chan context.Context) context.Context {
	t.Helper()
	select {
	case c := <-terms:
		return c
	case <-time.After(30 * time.Second):
		t.Fatalf("did not lead within 30s")
		return nil
	}
}

// httpHealth serves /healthz on 127.0.0.1 and returns the port.
func httpHealth(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHealthy follows service with blocking queries until it has n healthy
// instances; errors (the agent starting) are retried until the deadline.
func waitHealthy(t *testing.T, res *consul.Resolver, service string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var index uint64
	for {
		list, next, err := res.Healthy(ctx, service, index)
		switch {
		case ctx.Err() != nil:
			t.Fatalf("%s did not get %d healthy instances within 30s (last error %v)", service, n, err)
		case err != nil:
			index = 0
			time.Sleep(100 * time.Millisecond)
		case len(list) == n:
			return
		default:
			index = next
		}
	}
}

// TestPermissionDenied runs an agent that enforces ACLs: without a token
// every operation fails with ErrPermissionDenied and says what it tried.
func TestPermissionDenied(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{HCL: []string{
		`acl { enabled = true, default_policy = "deny", tokens { initial_management = "root-token", agent = "root-token" } }`,
	}, Token: "root-token"})
	anonymous := agent.Client(t)
	port := httpHealth(t)
	reg := consul.NewRegistry(anonymous, consul.RegistryConfig{})
	t.Cleanup(func() { _ = reg.Close() })
	lock := newLock(t, anonymous, consul.LeaderConfig{Key: "millrace/test/acl"})

	// An instance registered with the management token, which the
	// anonymous token may not see.
	cfg := agent.Config()
	cfg.Token = "root-token"
	root, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rootReg := consul.NewRegistry(root, consul.RegistryConfig{})
	t.Cleanup(func() { _ = rootReg.Close() })
	if err := rootReg.Register(t.Context(), discovery.Registration{ID: "acl-0", Service: "acl", Address: "127.0.0.1", Port: port}); err != nil {
		t.Fatalf("register with the management token: %v", err)
	}
	waitHealthy(t, consul.NewResolver(root, consul.ResolverConfig{}), "acl", 1)

	// A token that may read services but not nodes: Consul filters the
	// answer instead of refusing it. (An anonymous token gets an empty
	// answer without any sign of filtering: Consul 1.14 cannot be asked.)
	policy, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "services-only", Rules: `service_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = token.SecretID
	serviceReader, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		do   func() error
		want []string
	}{
		{"register", func() error {
			return reg.Register(t.Context(), discovery.Registration{ID: "acl-1", Service: "acl", Address: "127.0.0.1", Port: port})
		}, []string{"register instance acl-1 of service acl", `service:write on "acl"`, "403"}},
		{"resolve with service:read but no node:read", func() error {
			_, _, err := consul.NewResolver(serviceReader, consul.ResolverConfig{}).Healthy(t.Context(), "acl", 0)
			return err
		}, []string{"resolve service acl", "left out instances", `service:read on "acl" and node:read`}},
		{"lead", func() error {
			return lock.Run(t.Context(), func(context.Context) error { return errors.New("must not lead") })
		}, []string{"leader lock millrace/test/acl", "session:write"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			t.Logf("error: %v", err)
			if !errors.Is(err, consul.ErrPermissionDenied) {
				t.Fatalf("err = %v, want ErrPermissionDenied", err)
			}
			for _, w := range append(c.want, "lacks permission", "CONSUL_HTTP_TOKEN") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	if err := rootReg.Deregister(t.Context(), "acl-0"); err != nil {
		t.Fatalf("deregister with the management token: %v", err)
	}
}
