package promstack

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/proc"
)

const (
	// readyTimeout bounds start-up; Prometheus opening an empty TSDB takes
	// well under a second, so hitting this means something is broken.
	readyTimeout = 30 * time.Second
	// stopGrace is how long SIGTERM gets before SIGKILL. Both servers shut
	// down in milliseconds when idle; the grace only matters if one hangs.
	stopGrace = 5 * time.Second
	// logTailLines is how much of a child's log a failing test prints.
	logTailLines = 50
)

// server is what a running Alertmanager and Prometheus share: the process
// a test or a caller owns.
type server struct{ proc *proc.Process }

// Process is the server's process (its pid, log and state).
func (s server) Process() *proc.Process { return s.proc }

// Stop stops the server now rather than at cleanup, e.g. to test what
// happens when it goes away. Calling it more than once is harmless.
func (s server) Stop() error {
	_, err := s.proc.Stop(stopGrace)
	return err
}

// startForTest runs a server with run in a fresh t.TempDir() and stops it
// by t.Cleanup; a missing binary or a start failure fails the test.
func startForTest[S interface{ Process() *proc.Process }](t testing.TB, run func(dir string) (S, error)) S {
	t.Helper()
	s, err := run(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(t, s.Process()) })
	return s
}

// cleanup is registered with t.Cleanup for every started process: it stops
// the process, fails the test if the process died on its own or outlived
// SIGKILL, and prints the log tail if the test failed.
func cleanup(t testing.TB, p *proc.Process) {
	crashed := p.Crashed()
	killed, err := p.Stop(stopGrace)
	switch {
	case crashed:
		_, waitErr := p.Exited()
		t.Errorf("%s exited unexpectedly during the test: %v", p.Name, waitErr)
	case err != nil:
		t.Error(err)
	case killed:
		t.Logf("%s ignored SIGTERM for %v and was killed", p.Name, stopGrace)
	}
	if t.Failed() {
		logTail(t, p)
	}
}

// logTail prints the end of the child's log, which is usually where the
// reason for a failed start or a missing alert is.
func logTail(t testing.TB, p *proc.Process) {
	tail := proc.TailFile(p.LogPath, logTailLines)
	if tail == "" {
		t.Logf("%s log %s is empty or unreadable", p.Name, p.LogPath)
		return
	}
	t.Logf("last %d lines of %s:\n%s", strings.Count(tail, "\n")+1, p.LogPath, tail)
}

// launch starts a server on a fresh loopback address in dir and waits for
// its /-/ready (proc.StartServer: one retry when the free port was taken
// before the server bound it).
func launch(name, bin, dir string, args func(addr string) []string) (*proc.Process, string, error) {
	p, addr, err := proc.StartServer(context.Background(), proc.Server{
		Name: name, Bin: bin, Args: args,
		LogPath:   filepath.Join(dir, name+".log"),
		Options:   proc.Options{Dir: dir},
		ReadyPath: "/-/ready",
		Timeout:   readyTimeout,
		Reserve:   reserveAddr,
	})
	if err != nil {
		return nil, "", err
	}
	return p, "http://" + addr, nil
}

// reserveAddr is a variable so a test can simulate a stolen port.
var reserveAddr = proc.FreeAddr
