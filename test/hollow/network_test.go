package hollow_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/herd-k8s/herd/test/hollow"
)

// TestCleanupStale leaves what a crashed run leaves — a namespace, a veth
// pair, a bridge and a record named for a process that no longer exists —
// and checks that the next run removes it while a live Network stays.
func TestCleanupStale(t *testing.T) {
	live, err := hollow.NewNetwork()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close() })
	ns, err := live.Add()
	if err != nil {
		t.Fatal(err)
	}

	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("hh%da", gone.Process.Pid)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", prefix+"-1")
	ip("link", "add", prefix+"b", "type", "bridge")
	ip("link", "add", prefix+"h2", "type", "veth", "peer", "name", prefix+"n2")
	if err := os.WriteFile(filepath.Join("/run/herd-hollow", prefix), []byte(fmt.Sprintf("%d 1\n", gone.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // in case cleanup fails
		_ = exec.Command("ip", "netns", "del", prefix+"-1").Run()
		_ = exec.Command("ip", "link", "del", prefix+"b").Run()
		_ = exec.Command("ip", "link", "del", prefix+"h2").Run()
	})

	if err := hollow.CleanupStale(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/run/netns/" + prefix + "-1", "/sys/class/net/" + prefix + "b", "/sys/class/net/" + prefix + "h2", "/sys/class/net/" + prefix + "n2", "/run/herd-hollow/" + prefix} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived CleanupStale", p)
		}
	}
	for _, p := range []string{"/run/netns/" + ns.Name, "/sys/class/net/" + live.Prefix() + "b", "/run/herd-hollow/" + live.Prefix()} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the live network lost %s: %v", p, err)
		}
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/run/netns/" + ns.Name, "/sys/class/net/" + live.Prefix() + "b", "/run/herd-hollow/" + live.Prefix()} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived Close", p)
		}
	}
}
