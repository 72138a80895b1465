package controlplane

import (
	"context"
	"strings"
	"testing"
)

// StartForTest starts a control plane with opts for the test t, which
// fails at once if it cannot start; it is stopped when t ends. Its
// progress lines go to t's log unless opts.Log says otherwise. ctx bounds
// the start (and the caller's requests).
func StartForTest(ctx context.Context, t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.Log == nil {
		opts.Log = testWriter{t}
	}
	cp, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

// testWriter writes each line it gets to t's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
