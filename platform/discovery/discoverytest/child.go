package discoverytest

import (
	"bufio"
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
)

// childEnv, set in a test binary's environment, makes ServeChild serve.
const childEnv = "MILLRACE_DISCOVERYTEST_CHILD"

// ServeChild turns this process into the health-check child that
// StartChild starts, if it was started as one, and reports whether it was.
// Call it first in TestMain of every package that runs the suite, and
// return at once when it reports true:
//
//	func TestMain(m *testing.M) {
//		if discoverytest.ServeChild() {
//			return
//		}
//		m.Run()
//	}
//
// The child serves GET /healthz with 200 on a free port of 127.0.0.1,
// writes "port <n>" on stdout and serves until its stdin closes (its parent
// went away) or it is killed.
func ServeChild() bool {
	if os.Getenv(childEnv) == "" {
		return false
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "health child: listen:", err)
		return true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
	<-served
	return true
}

// Child is a process serving /healthz, started by StartChild.
type Child struct {
	// Port is where the child serves, on 127.0.0.1.
	Port int
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}
}

// StartChild starts this test binary again as a health-check child (see
// ServeChild) and waits until it serves. The child is killed when the test
// ends, if it still runs.
func StartChild(t testing.TB) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("start health child: %v", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("start health child: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start health child: %v", err)
	}
	c := &Child{cmd: cmd, in: in, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Process.Kill()
		<-c.done
	})

	line, err := bufio.NewReader(out).ReadString('\n')
	port, perr := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "port "))
	if err != nil || perr != nil {
		t.Fatalf("health child did not report its port (read %q, %v): does TestMain call discoverytest.ServeChild first?",
			line, errors.Join(err, perr))
	}
	c.Port = port
	return c
}

// Kill ends the child with SIGKILL, as a crash would: it cannot deregister
// or close its listener gracefully. It returns once the process is gone.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill health child: %v", err)
	}
	<-c.done
}
