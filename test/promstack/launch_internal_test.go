package promstack

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/herd-k8s/herd/test/proc"
)

// TestLaunchRetriesStolenPort simulates another process grabbing the port
// between reservation and bind: the first attempt must fail with "address
// already in use" and the second, on a fresh port, succeed.
func TestLaunchRetriesStolenPort(t *testing.T) {
	thief, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()

	calls := 0
	reserveAddr = func() (string, error) {
		calls++
		if calls == 1 {
			return thief.Addr().String(), nil
		}
		return proc.FreeAddr()
	}
	t.Cleanup(func() { reserveAddr = proc.FreeAddr })

	am := StartAlertmanager(t, "route:\n  receiver: none\nreceivers:\n  - name: none\n")
	if calls != 2 {
		t.Fatalf("reserveAddr called %d times, want 2 (one retry)", calls)
	}
	if am.URL == "http://"+thief.Addr().String() {
		t.Fatalf("alertmanager reports the stolen address %s", am.URL)
	}
	if _, err := os.Stat(filepath.Join(am.Dir, "alertmanager.2.log")); err != nil {
		t.Errorf("second attempt should log to its own file: %v", err)
	}
	if !proc.PortTaken(filepath.Join(am.Dir, "alertmanager.log")) {
		t.Errorf("first attempt's log does not mention the taken port")
	}
}
