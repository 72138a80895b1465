package promstack_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/promstack"
)

// procStat is the part of /proc/<pid>/stat the hygiene tests need.
type procStat struct {
	pid   int
	comm  string
	state string
	ppid  int
}

func (p procStat) String() string { return fmt.Sprintf("%d(%s,%s)", p.pid, p.comm, p.state) }

// readStat parses /proc/<pid>/stat. comm may contain spaces and parentheses,
// so the fields after it are found from the last ')'.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 2 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat ppid: %w", pid, err)
	}
	return procStat{pid: pid, comm: s[open+1 : end], state: fields[0], ppid: ppid}, nil
}

// children lists every process, zombies included, whose parent is ppid.
func children(t *testing.T, ppid int) []procStat {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("list /proc: %v", err)
	}
	var kids []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // exited while we looked
		}
		if st.ppid == ppid {
			kids = append(kids, st)
		}
	}
	return kids
}

// helperEnv makes the test binary act as a "test that dies abruptly"; see
// TestChildDiesWithTestBinary.
const helperEnv = "HERD_PROMSTACK_ORPHAN_HELPER"

// TestOrphanHelper is not a test on its own: run by
// TestChildDiesWithTestBinary, it starts Alertmanager, reports readiness and
// waits to be SIGKILLed, so no cleanup ever runs.
func TestOrphanHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	promstack.StartAlertmanager(t, "route:\n  receiver: none\nreceivers:\n  - name: none\n")
	fmt.Println("READY")
	time.Sleep(time.Minute)
}

// TestChildDiesWithTestBinary checks the guarantee cleanups cannot give:
// when the test binary is killed outright, its servers die with it
// (Pdeathsig) instead of holding ports and temp dirs forever.
func TestChildDiesWithTestBinary(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^TestOrphanHelper$", "-test.v")
	// The helper never runs its cleanups, so its temp dirs go under ours.
	tmp := t.TempDir()
	helper.Env = append(os.Environ(), helperEnv+"=1", "TMPDIR="+tmp)
	helper.Dir = tmp
	helper.Stderr = os.Stderr
	helper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
	})

	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not start alertmanager within 20s")
	}

	grandchildren := children(t, helper.Process.Pid)
	if len(grandchildren) != 1 {
		t.Fatalf("helper children = %v, want exactly the alertmanager", grandchildren)
	}
	am := grandchildren[0]

	if err := helper.Process.Kill(); err != nil {
		t.Fatalf("kill helper: %v", err)
	}
	_ = helper.Wait()

	// The orphan is reparented to init or a subreaper, which may never reap
	// it in a container; a zombie counts as dead.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := readStat(am.pid)
		if errors.Is(err, os.ErrNotExist) || (err == nil && st.state == "Z") {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(am.pid, syscall.SIGKILL) // don't leak it past this failure
			t.Fatalf("alertmanager %v still alive 5s after the test binary was killed", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
