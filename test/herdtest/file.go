package herdtest

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteTemp writes content to a file called name in a new directory that
// t removes when it ends, and returns its path; it fails t if it cannot.
func WriteTemp(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// WorkDir is where a tool run keeps its files: dir, created if missing,
// or, when dir is "", a new temporary directory named after prefix that
// done removes (done does nothing to a given dir, so that it keeps the
// run's logs).
func WorkDir(dir, prefix string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o755)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", func() {}, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
