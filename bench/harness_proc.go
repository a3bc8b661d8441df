package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process the harness started: its stdout is read line by
// line (to learn the addresses it listens on), its stderr goes to a log
// file in the work directory.
type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	lines   chan string
	logPath string

	done    chan struct{} // closed once the process exited
	waitErr error
	readers sync.WaitGroup
}

// startProc starts path with args (and env added to the harness's own),
// logging its stderr to dir/name.log.
func startProc(name, dir, path string, args, env []string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: create log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logFile
	cmd.Dir = dir
	setPdeathsig(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, lines: make(chan string, 64), logPath: logPath, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p.readers.Go(func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			_, _ = fmt.Fprintln(logFile, "stdout: "+line)
			select {
			case p.lines <- line:
			default: // nobody is waiting for lines any more
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	})
	go func() {
		p.readers.Wait()
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// waitLine returns the first line of stdout that contains marker, trimmed,
// and the time it arrived.
func (p *proc) waitLine(ctx context.Context, marker string) (string, time.Time, error) {
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", time.Time{}, fmt.Errorf("%s exited before printing %q: %s", p.name, marker, p.tail())
			}
			if strings.Contains(line, marker) {
				return strings.TrimSpace(line), time.Now(), nil
			}
		case <-ctx.Done():
			return "", time.Time{}, fmt.Errorf("%s did not print %q: %w: %s", p.name, marker, ctx.Err(), p.tail())
		}
	}
}

// tail returns the end of the process's log, to explain a failure.
func (p *proc) tail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log)"
	}
	if len(data) > 1500 {
		data = data[len(data)-1500:]
	}
	return "log " + p.logPath + ": " + strings.TrimSpace(string(data))
}

// rss returns the resident set size of the process, in bytes.
func (p *proc) rss() (int64, error) { return rssOf(p.cmd.Process.Pid) }

// stop asks the process to end (SIGTERM), waits up to grace, then kills it.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("stop %s: still running %s after SIGTERM, killed", p.name, grace)
	}
	var exit *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &exit) {
		return fmt.Errorf("stop %s: %w", p.name, p.waitErr)
	}
	return nil
}

// rssOf reads VmRSS of a process from /proc.
func rssOf(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS of process %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("read RSS of process %d: parse %q: %w", pid, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read RSS of process %d: no VmRSS line", pid)
}

// rssSampler records the highest RSS of a process while it runs.
type rssSampler struct {
	peak  int64
	stopc chan struct{}
	wg    sync.WaitGroup
}

func sampleRSS(p *proc, every time.Duration) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := p.rss(); err == nil && v > s.peak {
				s.peak = v
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	})
	return s
}

// stop ends the sampling and returns the peak.
func (s *rssSampler) stop() int64 {
	close(s.stopc)
	s.wg.Wait()
	return s.peak
}

// cpuTime returns the CPU time (user and system) the process used so far.
func (p *proc) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of %s: %w", p.name, err)
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15, in clock ticks.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("read CPU time of %s: short /proc stat line", p.name)
	}
	var utime, stime int64
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, fmt.Errorf("read CPU time of %s: %w", p.name, err)
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, fmt.Errorf("read CPU time of %s: %w", p.name, err)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// waitIdle waits until the process uses less than a tenth of a core over
// half a second, so that the work a run left behind (commands still being
// handled after an intake run) does not slow the next run down. It gives up
// after limit and reports how long it waited.
func (p *proc) waitIdle(ctx context.Context, limit time.Duration) (time.Duration, error) {
	const window = 500 * time.Millisecond
	start := time.Now()
	prev, err := p.cpuTime()
	if err != nil {
		return 0, err
	}
	for time.Since(start) < limit {
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-p.done:
			return time.Since(start), fmt.Errorf("%s exited: %s", p.name, p.tail())
		case <-time.After(window):
		}
		now, err := p.cpuTime()
		if err != nil {
			return time.Since(start), err
		}
		if now-prev < window/10 {
			return time.Since(start), nil
		}
		prev = now
	}
	return time.Since(start), nil
}

// cpuMeter measures the CPU time a process uses from a moment on.
type cpuMeter struct {
	p     *proc
	from  time.Duration // CPU time when measuring started; -1 if unknown
	stopc chan struct{}
	wg    sync.WaitGroup
}

// measureCPU starts measuring the CPU time of p after delay (the warm-up of
// a load run), so that stop returns the CPU time of the measured window.
func measureCPU(p *proc, delay time.Duration) *cpuMeter {
	m := &cpuMeter{p: p, from: -1, stopc: make(chan struct{})}
	m.wg.Go(func() {
		select {
		case <-m.stopc:
			return
		case <-time.After(delay):
		}
		if t, err := p.cpuTime(); err == nil {
			m.from = t
		}
	})
	return m
}

// stop returns the CPU time p used since measuring started; 0 when it is
// not known.
func (m *cpuMeter) stop() time.Duration {
	close(m.stopc)
	m.wg.Wait()
	to, err := m.p.cpuTime()
	if err != nil || m.from < 0 {
		return 0
	}
	return to - m.from
}
