package stack

import (
	"context"
	"io"
	"strings"
	"testing"
)

// StartTest is Start for a test: the stack's files live in t.TempDir(),
// its progress goes to t.Log, and a start failure fails the test. When the
// test ends the stack is closed; a process that exited on its own, an
// in-process exporter that failed, or one that outlived SIGKILL fails the
// test, and a failed test prints the end of every log.
func StartTest(ctx context.Context, t testing.TB, opts Options) *Stack {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Log == nil {
		opts.Log = testLog{t}
	}
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Only Start logs: nothing may reach t.Log after the test.
	s.opts.Log = io.Discard
	t.Cleanup(func() {
		for _, name := range s.Crashed() {
			t.Errorf("%s exited unexpectedly during the test", name)
		}
		if t.Failed() {
			t.Logf("the stack's logs:\n%s", s.Tails(40, false))
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
