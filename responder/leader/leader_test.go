package leader

import (
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// TestNewRejectsBadTimings: client-go's elector needs lease-duration >
// renew-deadline > retry-period; a bad combination is a start-up error
// naming all three, not a panic later.
func TestNewRejectsBadTimings(t *testing.T) {
	c := fake.NewClientset()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no identity", Options{Namespace: "herd", Name: "herd-responder"}, `needs a namespace, a Lease name and an identity (got "herd", "herd-responder", "")`},
		{"renew not under lease", Options{Namespace: "herd", Name: "l", Identity: "a", LeaseDuration: 10 * time.Second, RenewDeadline: 10 * time.Second}, "want lease-duration (10s) > renew-deadline (10s) > retry-period (2s) > 0"},
		{"retry not under renew", Options{Namespace: "herd", Name: "l", Identity: "a", RetryPeriod: 11 * time.Second}, "want lease-duration (15s) > renew-deadline (10s) > retry-period (11s) > 0"},
	} {
		_, err := New(c, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	e, err := New(c, Options{Namespace: "herd", Name: "l", Identity: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if e.IsLeader() {
		t.Error("a new elector leads before it ran")
	}
}
