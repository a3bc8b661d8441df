// Package consultest starts a real Consul agent for tests: Consul v1.14.11
// in dev mode (an in-memory server), every listener on 127.0.0.1 on free
// ports, DNS and gRPC off, in a directory of the test's own. It never
// skips: without the binary a test fails and says how to build it.
//
// The binary is found at $MILLRACE_CONSUL_BIN, else where
// scripts/consul-agent.sh caches it:
// ${XDG_CACHE_HOME:-$HOME/.cache}/millrace/consul-1.14.11/consul
// (`make test` runs the script first).
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/consul"
)

// Version is the Consul version the tests run.
const Version = "1.14.11"

// Binary returns the path of the Consul binary, or an error that says how
// to build it.
func Binary() (string, error) {
	if p := os.Getenv("MILLRACE_CONSUL_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("MILLRACE_CONSUL_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	dir := os.Getenv("MILLRACE_CONSUL_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find the consul binary: %w", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "millrace", "consul-"+Version)
	}
	p := filepath.Join(dir, "consul")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no consul agent binary at %s: run `make test` (or scripts/consul-agent.sh) once to build Consul v%s into it (about 4 minutes)", p, Version)
	}
	return p, nil
}

// Options change the agent's configuration.
type Options struct {
	// HCL fragments added with -hcl, e.g. an acl block.
	HCL []string
	// Token is an ACL token that may read the agent's node health, for
	// the readiness check of an agent that enforces ACLs.
	Token string
	// HTTPS adds an https listener that verifies client certificates,
	// with a CA and certificates made by `consul tls` in the agent's
	// directory (see Agent.TLS).
	HTTPS bool
}

// TLSFiles are the PEM files of an agent started with Options.HTTPS.
type TLSFiles struct {
	CA, ClientCert, ClientKey string
	// ServerName is a name in the agent's certificate.
	ServerName string
}

// Agent is a running Consul agent in dev mode.
type Agent struct {
	bin       string
	dir       string
	args      []string
	addr      string
	httpsAddr string
	tls       TLSFiles
	token     string
	node      string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *lockedBuffer
}

// Start starts an agent for t and stops it when t ends. It fails t when
// the binary is missing or the agent does not come up.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	a, err := StartAgent(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop consul agent: %v", err)
		}
	})
	return a
}

// StartAgent starts an agent working in dir and returns once it has a
// leader and its node is healthy. The caller stops it.
func StartAgent(dir string, opts Options) (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		bin:   bin,
		dir:   dir,
		addr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		node:  "millrace-test-" + strconv.Itoa(ports[0]),
		token: opts.Token,
	}
	a.args = []string{
		"agent", "-dev", "-node", a.node,
		"-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]),
		"-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]),
		"-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		// Sessions as short as 1 s, so that leader tests need not wait
		// for Consul's default minimum of 10 s.
		"-hcl", `session_ttl_min = "1s"`,
		"-log-level", "info",
	}
	for _, h := range opts.HCL {
		a.args = append(a.args, "-hcl", h)
	}
	if opts.HTTPS {
		if err := a.makeCerts(); err != nil {
			return nil, err
		}
		a.httpsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[4]))
		a.args = append(a.args,
			"-hcl", fmt.Sprintf(`ports { https = %d }`, ports[4]),
			"-hcl", fmt.Sprintf(`tls { defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true } }`,
				a.tls.CA, filepath.Join(dir, "dc1-server-consul-0.pem"), filepath.Join(dir, "dc1-server-consul-0-key.pem")))
	}
	if err := a.Restart(); err != nil {
		return nil, err
	}
	return a, nil
}

// makeCerts creates a CA, a server and a client certificate in a.dir.
func (a *Agent) makeCerts() error {
	for _, args := range [][]string{
		{"tls", "ca", "create"},
		{"tls", "cert", "create", "-server", "-dc", "dc1"},
		{"tls", "cert", "create", "-client", "-dc", "dc1"},
	} {
		cmd := exec.Command(a.bin, args...)
		cmd.Dir = a.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("consul %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	a.tls = TLSFiles{
		CA:         filepath.Join(a.dir, "consul-agent-ca.pem"),
		ClientCert: filepath.Join(a.dir, "dc1-client-consul-0.pem"),
		ClientKey:  filepath.Join(a.dir, "dc1-client-consul-0-key.pem"),
		ServerName: "server.dc1.consul",
	}
	return nil
}

// HTTPSAddr is the agent's https address, host:port, with Options.HTTPS.
func (a *Agent) HTTPSAddr() string { return a.httpsAddr }

// TLS names the certificate files, with Options.HTTPS.
func (a *Agent) TLS() TLSFiles { return a.tls }

// Addr is the agent's HTTP address, host:port.
func (a *Agent) Addr() string { return a.addr }

// Node is the agent's node name.
func (a *Agent) Node() string { return a.node }

// Config is the client configuration for the agent.
func (a *Agent) Config() consul.Config { return consul.Config{Address: a.addr} }

// Client returns a client of the agent, failing t on error.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := consul.NewClient(a.Config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Restart starts the agent again after Stop or Kill, on the same ports.
// A dev-mode agent keeps nothing: registrations, sessions and keys are gone.
// It returns once the agent has a leader and its node is healthy.
func (a *Agent) Restart() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("start consul agent: already running")
	}
	a.log = &lockedBuffer{}
	cmd := exec.Command(a.bin, a.args...)
	cmd.Dir = a.dir
	cmd.Stdout, cmd.Stderr = a.log, a.log
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start consul agent %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done = cmd, done
	if err := a.waitReady(30 * time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-done
		a.cmd = nil
		return fmt.Errorf("start consul agent on %s: %w\n--- agent log ---\n%s", a.addr, err, a.log.tail(40))
	}
	return nil
}

// waitReady polls the agent until it has a leader and its serfHealth check
// passes (sessions need it), or the deadline passes.
func (a *Agent) waitReady(timeout time.Duration) error {
	cfg := a.Config()
	cfg.Token = a.token
	client, err := consul.NewClient(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-a.done:
			return errors.New("the agent exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", timeout, last)
		case <-tick.C:
		}
		leader, err := client.Status().Leader()
		if err != nil || leader == "" {
			last = fmt.Errorf("no leader yet (%v)", err)
			continue
		}
		checks, _, err := client.Health().Node(a.node, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			last = err
			continue
		}
		for _, c := range checks {
			if c.CheckID == "serfHealth" && c.Status == api.HealthPassing {
				return nil
			}
		}
		last = errors.New("serfHealth not passing yet")
	}
}

// Stop stops the agent gracefully (SIGINT), or kills it after 15 s.
func (a *Agent) Stop() error { return a.stop(syscall.SIGINT) }

// Kill kills the agent with SIGKILL.
func (a *Agent) Kill() error { return a.stop(syscall.SIGKILL) }

func (a *Agent) stop(sig syscall.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return nil
	}
	if err := a.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal consul agent: %w", err)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
	return nil
}

// Log is what the agent wrote since it last started.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return ""
	}
	return a.log.String()
}

// freePorts finds n free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var (
		ports []int
		lns   []net.Listener
	)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
