package promstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

// launch starts a server on a fresh loopback address and waits for its
// /-/ready endpoint. Picking a free port and handing it to a child is racy,
// so a start that failed because the port was taken meanwhile is retried
// once with a new port.
func launch(t testing.TB, name, bin, dir string, args func(addr string) []string) (*proc.Process, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		// One log per attempt, so each process's cleanup prints its own.
		logPath := filepath.Join(dir, name+".log")
		if attempt > 1 {
			logPath = filepath.Join(dir, fmt.Sprintf("%s.%d.log", name, attempt))
		}
		addr, err := reserveAddr()
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		p, err := proc.StartWith(name, bin, args(addr), logPath, proc.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cleanup(t, p) })

		url := "http://" + addr
		err = waitReady(p, url)
		if err == nil {
			return p, url
		}
		if _, stopErr := p.Stop(stopGrace); stopErr != nil {
			t.Error(stopErr)
		}
		if attempt == 1 && portStolen(logPath) {
			t.Logf("start %s: %s was taken before the server bound it; retrying on another port", name, addr)
			continue
		}
		// The cleanup registered above prints the log tail.
		t.Fatalf("start %s: %v", name, err)
	}
}

// reserveAddr is a variable so a test can simulate a stolen port.
var reserveAddr = freeLoopbackAddr

// freeLoopbackAddr asks the kernel for an unused loopback port.
func freeLoopbackAddr() (string, error) {
	port, err := proc.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

func portStolen(logPath string) bool {
	data, err := os.ReadFile(logPath)
	return err == nil && bytes.Contains(data, []byte("address already in use"))
}

// waitReady polls /-/ready until it answers 200, the child exits, or
// readyTimeout passes.
func waitReady(p *proc.Process, baseURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	// A probe must not outlive the child: whoever stole its port may accept
	// connections and never answer.
	probeCtx, cancelProbe := context.WithCancel(ctx)
	defer cancelProbe()
	go func() {
		select {
		case <-p.Done():
			cancelProbe()
		case <-probeCtx.Done():
		}
	}()
	lastErr := errors.New("no answer yet")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := probeReady(probeCtx, baseURL+"/-/ready")
		if err == nil {
			// A 200 from a port thief would look the same; make sure our
			// child is still the one serving.
			if exited, waitErr := p.Exited(); exited {
				return fmt.Errorf("exited while %s answered ready: %v", baseURL, waitErr)
			}
			return nil
		}
		lastErr = err
		select {
		case <-p.Done():
			_, waitErr := p.Exited()
			return fmt.Errorf("exited before becoming ready: %v", waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %w", readyTimeout, lastErr)
		case <-tick.C:
		}
	}
}

func probeReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
