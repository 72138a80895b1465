package proc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/proc"
)

// start runs sh -c script with its log in a temp dir and stops it (SIGKILL
// at once) when the test ends.
func start(t *testing.T, script string) *proc.Process {
	t.Helper()
	p, err := proc.Start("sh", "/bin/sh", []string{"-c", script}, filepath.Join(t.TempDir(), "sh.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// waitLastLine waits until the last line of the process's log is want (the
// "### <bin> <args>" header may contain want too).
func waitLastLine(t *testing.T, p *proc.Process, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := proc.WaitUntil(ctx, p, 10*time.Millisecond, func(context.Context) error {
		if proc.TailFile(p.LogPath, 1) == want {
			return nil
		}
		return errors.New("not the last line yet")
	})
	if err != nil {
		t.Fatalf("waiting for %q at the end of the log: %v\n%s", want, err, p.Tail(20))
	}
}

func TestStopEscalatesWhenSIGTERMIsIgnored(t *testing.T) {
	t.Parallel()
	// The trap must be in place before Stop's SIGTERM, hence the marker.
	p := start(t, `trap "" TERM; echo trapped; sleep 60`)
	waitLastLine(t, p, "trapped")

	begin := time.Now()
	killed, err := p.Stop(200 * time.Millisecond)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !killed {
		t.Error("Stop reported killed=false for a process that ignores SIGTERM")
	}
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Errorf("Stop took %v, less than the 200ms grace", d)
	}
	if exited, _ := p.Exited(); !exited {
		t.Error("process not reaped after Stop")
	}
	if p.Crashed() {
		t.Error("an exit caused by Stop is reported as a crash")
	}
	if killed, err := p.Stop(200 * time.Millisecond); killed || err != nil {
		t.Errorf("second Stop = (%v, %v), want (false, nil)", killed, err)
	}
}

func TestStopGraceful(t *testing.T) {
	t.Parallel()
	p := start(t, "exec sleep 60")
	killed, err := p.Stop(10 * time.Second)
	if killed || err != nil {
		t.Errorf("Stop = (%v, %v), want (false, nil)", killed, err)
	}
	if p.Crashed() {
		t.Error("an exit caused by Stop is reported as a crash")
	}
}

func TestCrashed(t *testing.T) {
	t.Parallel()
	p := start(t, "exit 3")
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("sh -c 'exit 3' did not exit")
	}
	if !p.Crashed() {
		t.Error("an exit nobody asked for is not reported as a crash")
	}
	if _, err := p.Exited(); err == nil {
		t.Error("Exited reports no error for exit status 3")
	}
	if killed, err := p.Stop(time.Second); killed || err != nil {
		t.Errorf("Stop after exit = (%v, %v), want (false, nil)", killed, err)
	}
	if p.Crashed() {
		t.Error("Crashed after Stop; a handled exit is no longer a crash")
	}
}

func TestStartWithLogHeaderDirEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "sh.log")
	p, err := proc.StartWith("sh", "/bin/sh", []string{"-c", `pwd; echo "FOO=$FOO"`}, logPath,
		proc.Options{Dir: dir, Env: []string{"FOO=bar"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	// The child owns the log descriptor; the parent must not hold a copy.
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == logPath {
			t.Errorf("parent still has %s open as fd %s", logPath, fd.Name())
		}
	}
	<-p.Done()
	want := `### /bin/sh -c pwd; echo "FOO=$FOO"` + "\n" + dir + "\nFOO=bar"
	if got := p.Tail(10); got != want {
		t.Errorf("log =\n%s\nwant\n%s", got, want)
	}
	if got := proc.TailFile(logPath, 1); got != "FOO=bar" {
		t.Errorf("TailFile(1) = %q, want %q", got, "FOO=bar")
	}
}

func TestChildren(t *testing.T) {
	t.Parallel()
	p := start(t, "exec sleep 60")
	kids, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, p.Pid()) {
		t.Errorf("Children(self) = %v, want it to contain %d", kids, p.Pid())
	}
	if _, err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	kids, err = proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Reaped, so neither live nor a zombie.
	if slices.Contains(kids, p.Pid()) {
		t.Errorf("Children(self) = %v still contains stopped pid %d", kids, p.Pid())
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if port <= 0 || port > 65535 {
		t.Errorf("FreePort = %d", port)
	}
}
