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
