// Package proc starts the real servers the tests and the demo depend on
// (etcd, kube-apiserver, Prometheus, Alertmanager) so that none outlives its
// owner: each runs in its own process group, dies with the process that
// started it (Pdeathsig), and is stopped with SIGTERM then SIGKILL.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// minKillWait is the least time Stop waits for the child after SIGKILL
// before it reports that the child survived it.
const minKillWait = 5 * time.Second

// Process is one started server and the file its output goes to.
type Process struct {
	Name    string
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed once the child has been reaped
	waitErr error         // valid after done is closed

	// stopping is set before we signal the child, so an exit we caused is
	// not reported as a crash.
	stopping atomic.Bool

	mu      sync.Mutex // serialises Stop and Kill
	stopped bool       // the child was reaped by or before a Stop or Kill
}

// Options are the less common settings for StartWith.
type Options struct {
	// Dir is the child's working directory; "" means the parent's.
	Dir string
	// Env is added to the parent's environment; nil passes it unchanged.
	Env []string
}

// Start runs path with args, sending stdout and stderr to logPath, with env
// added to the parent's environment. See StartWith.
func Start(name, path string, args []string, logPath string, env []string) (*Process, error) {
	return StartWith(name, path, args, logPath, Options{Env: env})
}

// StartWith runs path with args, appending a "### <path> <args>" line and
// then the child's stdout and stderr to logPath. The child gets its own
// process group (so a terminal's Ctrl-C reaches only the parent, which then
// stops it in order, and Stop reaches anything it forks) and SIGKILL when
// the parent dies, even if no cleanup runs (panic, os.Exit, a test timeout).
//
// The parent-death signal is delivered when the OS thread that started the
// child exits, so do not call StartWith from a goroutine that has locked its
// OS thread.
func StartWith(name, path string, args []string, logPath string, opts Options) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	// The child owns its copy of the descriptor after Start.
	defer logFile.Close()
	if _, err := fmt.Fprintf(logFile, "### %s %s\n", path, strings.Join(args, " ")); err != nil {
		return nil, fmt.Errorf("start %s: write log: %w", name, err)
	}

	cmd := exec.Command(path, args...)
	cmd.Dir = opts.Dir
	// An *os.File is handed to the child directly, so no copying goroutine
	// can keep Wait from returning.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if opts.Env != nil {
		cmd.Env = append(os.Environ(), opts.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Crashed reports whether the process has ended although neither Stop nor
// Kill has been called. An exit we caused is not a crash (both set a flag
// before they signal), nor is one the caller has since handled by calling
// Stop; to tell a crash from a stop, call Crashed before Stop.
func (p *Process) Crashed() bool {
	exited, _ := p.Exited()
	// Read after done: if our signal ended the child, the flag set before
	// it is visible here.
	return exited && !p.stopping.Load()
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs
// the group and waits for the child to be reaped. killed reports whether
// SIGKILL was needed; err is set if the child outlived SIGKILL by
// max(grace, 5s), and then a later Stop tries again. Once the child has
// been reaped, anything left in its group is SIGKILLed too. Stop is safe to
// call more than once and concurrently; a call after the child was reaped
// returns (false, nil).
func (p *Process) Stop(grace time.Duration) (killed bool, err error) {
	p.stopping.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false, nil
	}
	// The child has not been reaped before this Stop, so its pid (= pgid)
	// cannot have been reused yet.
	pgid := p.cmd.Process.Pid
	if exited, _ := p.Exited(); !exited {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			killed = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(max(grace, minKillWait)):
				return true, fmt.Errorf("stop %s: pid %d survived SIGKILL for %v", p.Name, pgid, max(grace, minKillWait))
			}
		}
	}
	// Anything the child forked into its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.stopped = true
	return killed, nil
}

// Kill ends the process group at once, as a crash or an OOM kill would, and
// waits for the child to be reaped. It does nothing after Stop or Kill.
func (p *Process) Kill() {
	p.stopping.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	p.stopped = true
}

// Tail returns the last n lines of the process's log, for failure messages.
func (p *Process) Tail(n int) string { return TailFile(p.LogPath, n) }

// TailFile returns the last n lines of a file ("" when it cannot be read).
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process can take it before the caller binds it; callers that start a server
// on it retry once on failure.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Children lists the pids of live processes whose parent is pid. Tests use it
// to prove that nothing they started survives them.
func Children(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone already
		}
		// Format: pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := bytes.Fields(stat[i+1:])
		if len(fields) < 2 || string(fields[0]) == "Z" {
			continue
		}
		ppid, err := strconv.Atoi(string(fields[1]))
		if err == nil && ppid == pid {
			kids = append(kids, child)
		}
	}
	return kids, nil
}

// WaitUntil polls check every interval until it returns nil, ctx ends, or the
// process exits (a server that died will never become ready).
func WaitUntil(ctx context.Context, p *Process, interval time.Duration, check func(context.Context) error) error {
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v)", p.Name, ctx.Err(), last)
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v (last check: %v)", p.Name, p.waitErr, last)
		case <-time.After(interval):
		}
	}
}

// ErrMissingBinary marks an error for a binary that is not installed; its text
// says how to get it.
var ErrMissingBinary = errors.New("binary not found")
